//! The pure builders: for a given spec, the exact children (names, labels, env, probes,
//! securityContext), checked without a cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use clinic_operator::api::CONFIRM_DELETION_ANNOTATION;
use clinic_operator::desired::{self, SecretValues, backend, database, frontend, gateway, monitoring};
use clinic_operator::model::Clinic;
use common::{CLINIC_UID, annotated_clinic, clinic, typed};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::DynamicObject;

fn objects(c: &Clinic) -> Vec<DynamicObject> {
    desired::objects(c, &SecretValues::Placeholder)
}

fn kind_names(objects: &[DynamicObject]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o.types.as_ref().unwrap().kind, o.metadata.name.as_deref().unwrap()))
        .collect()
}

fn env_of<'a>(container: &'a Container, name: &str) -> &'a EnvVar {
    container.env.iter().flatten().find(|e| e.name == name).unwrap_or_else(|| panic!("env {name} missing"))
}

fn env_value(container: &Container, name: &str) -> String {
    env_of(container, name).value.clone().unwrap_or_default()
}

fn secret_ref(container: &Container, name: &str) -> (String, String) {
    let r = env_of(container, name)
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secret ref");
    (r.name.clone(), r.key.clone())
}

#[test]
fn minimal_clinic_has_the_full_child_set() {
    let names = kind_names(&objects(&clinic("  {}\n")));
    let expected: BTreeSet<String> = [
        "Secret/lyon-db-credentials",
        "Secret/lyon-db-encryption",
        "Secret/lyon-openmrs-admin",
        "Secret/lyon-db-ca",
        "Secret/lyon-db-tls",
        "NetworkPolicy/lyon-default-deny",
        "NetworkPolicy/lyon-allow-dns",
        "NetworkPolicy/lyon-gateway",
        "NetworkPolicy/lyon-frontend",
        "NetworkPolicy/lyon-backend",
        "NetworkPolicy/lyon-mariadb",
        "ConfigMap/lyon-mariadb-config",
        "Service/lyon-mariadb",
        "StatefulSet/lyon-mariadb",
        "Service/lyon-backend",
        "Service/lyon-backend-pods",
        "StatefulSet/lyon-backend",
        "Service/lyon-frontend",
        "Deployment/lyon-frontend",
        "ConfigMap/lyon-gateway-nginx",
        "Service/lyon-gateway",
        "Deployment/lyon-gateway",
        "HorizontalPodAutoscaler/lyon-frontend",
        "HorizontalPodAutoscaler/lyon-gateway",
        "PodDisruptionBudget/lyon-frontend",
        "PodDisruptionBudget/lyon-gateway",
        "Secret/lyon-mariadb-exporter",
        "Service/lyon-mariadb-metrics",
        "Service/lyon-gateway-metrics",
        "ConfigMap/lyon-dashboard",
        "ServiceMonitor/lyon-metrics",
        "PrometheusRule/lyon-alerts",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);
}

#[test]
fn every_child_is_labelled_owned_and_namespaced() {
    for o in
        objects(&clinic("  ingress:\n    host: emr.lyon.example.fr\n    tls:\n      secretName: lyon-cert\n"))
    {
        let name = o.metadata.name.clone().unwrap();
        let labels = o.metadata.labels.clone().unwrap_or_default();
        for key in ["name", "instance", "component", "part-of", "managed-by"] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{key}")),
                "{name} lacks app.kubernetes.io/{key}"
            );
        }
        assert_eq!(labels["app.kubernetes.io/instance"], "lyon");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "clinic-operator");
        assert_eq!(o.metadata.namespace.as_deref(), Some("clinic-lyon"), "{name}");
        let owners = o.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{name} has one owner");
        assert_eq!(owners[0].kind, "ClinicPlatform");
        assert_eq!(owners[0].controller, Some(true));
    }
}

/// Pod Security "restricted" (v1.34 policy), checked field by field.
fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    let psc = pod.security_context.clone().unwrap_or_default();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        v.push("host namespaces".into());
    }
    for vol in pod.volumes.iter().flatten() {
        let allowed = vol.config_map.is_some()
            || vol.secret.is_some()
            || vol.empty_dir.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.downward_api.is_some();
        if !allowed {
            v.push(format!("volume {} has a non-restricted type", vol.name));
        }
    }
    let safe_sysctls = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    ];
    for s in psc.sysctls.iter().flatten() {
        if !safe_sysctls.contains(&s.name.as_str()) {
            v.push(format!("unsafe sysctl {}", s.name));
        }
    }
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|s| s.type_.clone());
    for c in desired::all_containers(pod) {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            v.push(format!("{}: privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!("{}: allowPrivilegeEscalation must be false", c.name));
        }
        if sc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
            v.push(format!("{}: runAsNonRoot must be true", c.name));
        }
        if sc.run_as_user.or(psc.run_as_user) == Some(0) {
            v.push(format!("{}: runs as uid 0", c.name));
        }
        let seccomp = sc.seccomp_profile.as_ref().map(|s| s.type_.clone()).or(pod_seccomp.clone());
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault") | Some("Localhost")) {
            v.push(format!("{}: seccompProfile must be RuntimeDefault", c.name));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            v.push(format!("{}: must drop ALL capabilities", c.name));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            v.push(format!("{}: adds capabilities", c.name));
        }
        if c.ports.iter().flatten().any(|p| p.host_port.is_some()) {
            v.push(format!("{}: hostPort", c.name));
        }
        // Beyond "restricted": our own rule of a read-only root and set resources.
        if sc.read_only_root_filesystem != Some(true) {
            v.push(format!("{}: root filesystem must be read-only", c.name));
        }
        let res = c.resources.clone().unwrap_or_default();
        if res.requests.is_none() || res.limits.is_none() {
            v.push(format!("{}: requests and limits must be set", c.name));
        }
    }
    v
}

fn pod_specs(objects: &[DynamicObject]) -> Vec<(String, PodSpec)> {
    let mut out = Vec::new();
    for o in objects {
        let kind = o.types.as_ref().unwrap().kind.as_str();
        let name = o.metadata.name.clone().unwrap();
        let spec = match kind {
            "StatefulSet" => typed::<StatefulSet>(objects, kind, &name).spec.unwrap().template.spec,
            "Deployment" => typed::<Deployment>(objects, kind, &name).spec.unwrap().template.spec,
            _ => continue,
        };
        out.push((name, spec.expect("pod spec")));
    }
    out
}

#[test]
fn every_pod_passes_restricted_with_read_only_root() {
    for spec in [
        "  {}\n",
        "  openmrs:\n    backend:\n      replicas: 2\n      clustering:\n        elasticsearchUris: http://es:9200\n        attachmentsClaimName: shared\n",
    ] {
        let objects = objects(&clinic(spec));
        let pods = pod_specs(&objects);
        assert_eq!(pods.len(), 4);
        for (name, pod) in pods {
            let violations = restricted_violations(&pod);
            assert!(violations.is_empty(), "{name}: {violations:?}");
            assert_eq!(pod.automount_service_account_token, Some(false), "{name} mounts an API token");
            // Declared, so that a `true` patched in by anyone is drift the operator owns and undoes.
            for (field, value) in [
                ("hostNetwork", pod.host_network),
                ("hostPID", pod.host_pid),
                ("hostIPC", pod.host_ipc),
                ("shareProcessNamespace", pod.share_process_namespace),
            ] {
                assert_eq!(value, Some(false), "{name}: {field} is not declared false");
            }
        }
    }
}

#[test]
fn backend_is_configured_safely() {
    let c = clinic("  {}\n");
    let objects = objects(&c);
    let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-backend");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    // Governed by the headless Service (per-pod DNS names), not the one the gateway reaches.
    assert_eq!(spec.service_name.as_deref(), Some("lyon-backend-pods"));
    let headless: Service = typed(&objects, "Service", "lyon-backend-pods");
    let headless = headless.spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    let ports: Vec<i32> = headless.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [8080], "no JGroups port without clustering");
    let pod = spec.template.spec.unwrap();
    let main = &pod.containers[0];
    assert_eq!(
        main.image.as_deref(),
        Some("docker.io/openmrs/openmrs-reference-application-3-backend:3.7.x-no-demo")
    );
    // MariaDB Connector/J, which verifies MariaDB's certificate against a PEM CA and its name.
    assert_eq!(env_value(main, "OMRS_DB"), "mariadb");
    let url = "jdbc:mariadb://lyon-mariadb:3306/openmrs?autoReconnect=true&sessionVariables=default_storage_engine=InnoDB&useUnicode=true&characterEncoding=UTF-8&sslMode=verify-full&serverSslCert=/etc/openmrs/db-tls/ca.crt";
    assert_eq!(env_value(main, "OMRS_DB_URL"), url);
    // Merged into the runtime properties at every start: an installed clinic follows too.
    assert_eq!(env_value(main, "OMRS_EXTRA_CONNECTION_URL"), url);
    assert_eq!(env_value(main, "OMRS_EXTRA_CONNECTION_DRIVER__CLASS"), "org.mariadb.jdbc.Driver");
    assert_eq!(env_value(main, "OMRS_DB_HOSTNAME"), "lyon-mariadb");
    assert_eq!(env_value(main, "OMRS_DB_PORT"), "3306");
    assert_eq!(env_value(main, "OMRS_DB_NAME"), "openmrs");
    assert_eq!(env_value(main, "OMRS_MODULE_WEB_ADMIN"), "false");
    assert_eq!(env_value(main, "OMRS_ADD_DEMO_DATA"), "false");
    assert_eq!(secret_ref(main, "OMRS_DB_USERNAME"), ("lyon-db-credentials".into(), "username".into()));
    assert_eq!(secret_ref(main, "OMRS_DB_PASSWORD"), ("lyon-db-credentials".into(), "password".into()));
    assert_eq!(
        secret_ref(main, "OMRS_ADMIN_USER_PASSWORD"),
        ("lyon-openmrs-admin".into(), "password".into())
    );
    assert!(main.env.iter().flatten().all(|e| e.name != "OMRS_SEARCH"), "lucene by default");

    let startup = main.startup_probe.as_ref().unwrap();
    assert_eq!(startup.http_get.as_ref().unwrap().path.as_deref(), Some("/openmrs/health/started"));
    assert!(
        startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 1200,
        "20 minutes for a first start"
    );
    let readiness = main.readiness_probe.as_ref().unwrap();
    assert_eq!(readiness.http_get.as_ref().unwrap().path.as_deref(), Some("/openmrs/ws/rest/v1/session"));
    assert_eq!(
        main.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
        Some("/openmrs/health/alive")
    );

    let mounts: BTreeMap<_, _> =
        main.volume_mounts.iter().flatten().map(|m| (m.mount_path.as_str(), m.name.as_str())).collect();
    assert_eq!(mounts.get("/openmrs/data"), Some(&"data"));
    assert_eq!(mounts.get("/openmrs"), Some(&"openmrs-home"));
    assert_eq!(mounts.get("/usr/local/tomcat"), Some(&"tomcat"));
    let claim = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "8Gi"
    );
    let res = main.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "1");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "4Gi");
    assert_eq!(pod.init_containers.as_ref().unwrap()[0].name, "stage-writable-dirs");
}

/// What the real node found: the image's tini is executable by group 0 only, and GNU `cp -a`
/// run by a non-root user into a root-owned emptyDir fails on the directory's times.
#[test]
fn image_contracts_tini_group_and_non_preserving_copies() {
    let objects = objects(&clinic("  {}\n"));
    for (name, pod) in pod_specs(&objects) {
        let group = pod.security_context.as_ref().and_then(|s| s.run_as_group);
        let containers = pod.init_containers.iter().flatten().chain(pod.containers.iter());
        if name == "lyon-backend" {
            assert_eq!(group, Some(0), "the backend runs with group 0");
            assert_eq!(pod.security_context.as_ref().and_then(|s| s.fs_group), Some(1001));
            for c in pod.init_containers.iter().flatten().chain(pod.containers.iter()) {
                assert_eq!(c.security_context.as_ref().and_then(|s| s.run_as_group), Some(0), "{}", c.name);
                assert_eq!(c.security_context.as_ref().and_then(|s| s.run_as_user), Some(1001), "{}", c.name);
            }
        }
        for c in containers {
            let script = c.command.iter().flatten().cloned().collect::<Vec<_>>().join(" ");
            assert!(!script.contains("cp -a"), "{name}/{}: {script}", c.name);
        }
    }
}

#[test]
fn backend_clustering_switches_search_and_adds_discovery() {
    let c = clinic(
        "  openmrs:\n    backend:\n      replicas: 3\n      clustering:\n        elasticsearchUris: http://es.search:9200\n        attachmentsClaimName: shared\n",
    );
    let objects = objects(&c);
    let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-backend");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("lyon-backend-pods"));
    let main = &spec.template.spec.unwrap().containers[0];
    assert_eq!(env_value(main, "OMRS_SEARCH"), "elasticsearch");
    assert_eq!(env_value(main, "OMRS_SEARCH_ES_URIS"), "http://es.search:9200");
    // One cache over the replicas, found through the headless Service, as upstream's chart does.
    assert_eq!(env_value(main, "cache.type"), "cluster");
    assert_eq!(env_value(main, "cache.stack"), "kubernetes");
    assert_eq!(env_value(main, "jgroups.dns.query"), "lyon-backend-pods.clinic-lyon.svc.cluster.local");
    assert_eq!(env_value(main, "jgroups.bind.port"), "7800");
    let headless: Service = typed(&objects, "Service", "lyon-backend-pods");
    let headless = headless.spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let ports: Vec<i32> = headless.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [8080, 7800, 7801]);
    // Search goes through: to the Elasticsearch's namespace, on its port, and nowhere else new.
    let policy: NetworkPolicy = typed(&objects, "NetworkPolicy", "lyon-backend");
    let egress = policy.spec.unwrap().egress.unwrap();
    let search: Vec<_> = egress
        .iter()
        .filter(|rule| {
            rule.to.iter().flatten().any(|peer| {
                peer.namespace_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .and_then(|l| l.get("kubernetes.io/metadata.name"))
                    == Some(&"search".to_string())
            })
        })
        .collect();
    assert_eq!(search.len(), 1, "{egress:?}");
    let ports = search[0].ports.clone().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9200)));
    // Without clustering, none of it.
    let single = desired::objects(&clinic("  {}\n"), &SecretValues::Placeholder);
    let sts: StatefulSet = typed(&single, "StatefulSet", "lyon-backend");
    let main = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(
        main.env.iter().flatten().all(|e| !e.name.starts_with("cache.") && !e.name.starts_with("jgroups."))
    );
}

#[test]
fn database_is_utf8mb4_with_probes_and_secrets() {
    let c = clinic("  database:\n    storage:\n      size: 20Gi\n      storageClassName: encrypted-ssd\n");
    let objects = objects(&c);
    let cm: k8s_openapi::api::core::v1::ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    let cnf = &cm.data.unwrap()["clinic.cnf"];
    assert!(cnf.contains("character-set-server = utf8mb4"));
    assert!(cnf.contains("collation-server = utf8mb4_general_ci"));
    let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claim = spec.volume_claim_templates.unwrap()[0].spec.clone().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("encrypted-ssd"));
    assert_eq!(claim.resources.unwrap().requests.unwrap()["storage"].0, "20Gi");
    let main = &spec.template.spec.unwrap().containers[0];
    assert_eq!(main.image.as_deref(), Some("docker.io/library/mariadb:10.11"));
    assert_eq!(
        secret_ref(main, "MARIADB_ROOT_PASSWORD"),
        ("lyon-db-credentials".into(), "root-password".into())
    );
    assert_eq!(secret_ref(main, "MARIADB_PASSWORD"), ("lyon-db-credentials".into(), "password".into()));
    assert_eq!(env_value(main, "MARIADB_DATABASE"), database::DATABASE_NAME);
    assert!(
        main.readiness_probe
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap()
            .contains(&"--innodb_initialized".to_string())
    );
    let svc: Service = typed(&objects, "Service", "lyon-mariadb");
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
}

#[test]
fn deletion_policy_drives_claim_retention_only_once_confirmed() {
    let confirmed = format!("{{\"{CONFIRM_DELETION_ANNOTATION}\": \"{CLINIC_UID}\"}}");
    let other_uid =
        format!("{{\"{CONFIRM_DELETION_ANNOTATION}\": \"0b5c2f1e-0000-4000-8000-000000000000\"}}");
    for (annotations, policy, expected) in [
        ("{}", "Retain", "Retain"),
        (confirmed.as_str(), "Retain", "Retain"),
        // Delete without intent: the claims stay.
        ("{}", "Delete", "Retain"),
        // A confirmation copied from another clinic (another uid) is no confirmation.
        (other_uid.as_str(), "Delete", "Retain"),
        (confirmed.as_str(), "Delete", "Delete"),
    ] {
        let clinic = annotated_clinic(annotations, &format!("  deletionPolicy: {policy}\n"));
        let objects = objects(&clinic);
        for name in ["lyon-mariadb", "lyon-backend"] {
            let sts: StatefulSet = typed(&objects, "StatefulSet", name);
            let retention = sts.spec.unwrap().persistent_volume_claim_retention_policy.unwrap();
            assert_eq!(
                retention.when_deleted.as_deref(),
                Some(expected),
                "{policy} with annotations {annotations}"
            );
            assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        }
    }
}

#[test]
fn frontend_gets_paths_and_locale() {
    let objects = objects(&clinic(
        "  openmrs:\n    locale: en_GB\n    spaConfigUrls: [/openmrs/spa/a.json, /openmrs/spa/b.json]\n",
    ));
    let d: Deployment = typed(&objects, "Deployment", "lyon-frontend");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let main = &pod.containers[0];
    assert_eq!(env_value(main, "SPA_PATH"), frontend::SPA_PATH);
    assert_eq!(env_value(main, "API_URL"), frontend::API_URL);
    assert_eq!(env_value(main, "SPA_DEFAULT_LOCALE"), "en_GB");
    assert_eq!(env_value(main, "SPA_CONFIG_URLS"), "/openmrs/spa/a.json /openmrs/spa/b.json");
    let sysctls = pod.security_context.unwrap().sysctls.unwrap();
    assert_eq!(sysctls[0].name, "net.ipv4.ip_unprivileged_port_start");
}

#[test]
fn gateway_config_reproduces_upstream_routing() {
    let c = clinic("  {}\n");
    let conf = gateway::nginx_conf(&c);
    assert!(conf.contains("server lyon-frontend:80;"));
    assert!(conf.contains(&format!("server lyon-backend:{};", backend::PORT)));
    assert!(conf.contains("rewrite ^/openmrs/spa/(.*)$ /$1 break;"), "strips /openmrs/spa");
    assert!(conf.contains("proxy_read_timeout 300s;"));
    for redirect in ["location = / {", "location = /openmrs/spa {", "location = /openmrs/spa/ {"] {
        let at = conf.find(redirect).unwrap_or_else(|| panic!("{redirect} missing"));
        assert!(conf[at..].lines().nth(1).unwrap().contains("return 301 /openmrs/spa/home;"));
    }
    assert!(conf.contains("X-Content-Type-Options nosniff"));
    assert!(conf.contains("frame-ancestors 'self'"));
    assert!(conf.contains("X-Forwarded-Proto $forwarded_proto"));
    assert!(!conf.contains("127.0.0.11"), "no Docker DNS");
    // HSTS whatever terminates TLS in front (browsers ignore it over plain HTTP).
    assert!(
        conf.contains("add_header Strict-Transport-Security \"max-age=31536000; includeSubDomains\" always;")
    );
    let tls = clinic("  ingress:\n    host: emr.lyon.example.fr\n    tls:\n      secretName: cert\n");
    assert!(gateway::nginx_conf(&tls).contains("Strict-Transport-Security"));

    let objects = objects(&c);
    let d: Deployment = typed(&objects, "Deployment", "lyon-gateway");
    let template = d.spec.unwrap().template;
    assert!(
        template.metadata.unwrap().annotations.unwrap().contains_key(desired::CONFIG_HASH_ANNOTATION),
        "config changes roll the pods"
    );
    let svc: Service = typed(&objects, "Service", "lyon-gateway");
    let port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.port, 80);
}

#[test]
fn config_change_changes_the_pod_template() {
    // MariaDB's configuration follows the spec (encryption at rest here): its pods roll with it.
    let hash = |spec: &str| {
        let objects = objects(&clinic(spec));
        let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
        sts.spec.unwrap().template.metadata.unwrap().annotations.unwrap()[desired::CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(hash("  {}\n"), hash("  database:\n    encryptAtRest: false\n"));
}

#[test]
fn autoscaled_deployments_leave_replicas_to_the_hpa() {
    let objects = objects(&clinic("  {}\n"));
    for name in ["lyon-frontend", "lyon-gateway"] {
        let d: Deployment = typed(&objects, "Deployment", name);
        assert_eq!(d.spec.unwrap().replicas, None, "{name}: an HPA owns replicas");
    }
    let fixed = objects_without_autoscaling();
    let names = kind_names(&fixed);
    assert!(!names.iter().any(|n| n.starts_with("HorizontalPodAutoscaler/")));
    let d: Deployment = typed(&fixed, "Deployment", "lyon-gateway");
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    // Gateway has 3 replicas -> a budget; frontend has 1 -> none.
    assert!(names.contains("PodDisruptionBudget/lyon-gateway"));
    assert!(!names.contains("PodDisruptionBudget/lyon-frontend"));
    assert!(!names.contains("PodDisruptionBudget/lyon-backend"), "a single backend pod needs no budget");
}

/// A clustered backend may lose one pod at a time to a drain, never more.
#[test]
fn a_clustered_backend_has_a_disruption_budget() {
    let objects = objects(&clinic(
        "  openmrs:\n    backend:\n      replicas: 3\n      clustering:\n        elasticsearchUris: http://es.search:9200\n        attachmentsClaimName: shared\n",
    ));
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
        typed(&objects, "PodDisruptionBudget", "lyon-backend");
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
    let selected = spec.selector.unwrap().match_labels.unwrap();
    assert_eq!(selected.get("app.kubernetes.io/component").map(String::as_str), Some("backend"));
}

fn objects_without_autoscaling() -> Vec<DynamicObject> {
    objects(&clinic(
        "  autoscaling:\n    enabled: false\n  openmrs:\n    frontend:\n      replicas: 1\n    gateway:\n      replicas: 3\n",
    ))
}

#[test]
fn ingress_tls_from_secret_or_cert_manager() {
    assert!(!kind_names(&objects(&clinic("  {}\n"))).iter().any(|n| n.starts_with("Ingress/")));

    let objects_secret = objects(&clinic(
        "  ingress:\n    host: emr.lyon.example.fr\n    className: nginx\n    tls:\n      secretName: lyon-cert\n",
    ));
    let ing: Ingress = typed(&objects_secret, "Ingress", "lyon");
    let spec = ing.spec.clone().unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(spec.tls.as_ref().unwrap()[0].secret_name.as_deref(), Some("lyon-cert"));
    let backend = spec.rules.unwrap()[0].http.clone().unwrap().paths[0].backend.service.clone().unwrap();
    assert_eq!(backend.name, "lyon-gateway");
    assert!(!ing.metadata.annotations.unwrap().keys().any(|k| k.starts_with("cert-manager.io/")));

    let objects_issuer = objects(&clinic(
        "  ingress:\n    host: emr.lyon.example.fr\n    tls:\n      issuerRef:\n        name: letsencrypt\n",
    ));
    let ing: Ingress = typed(&objects_issuer, "Ingress", "lyon");
    let annotations = ing.metadata.annotations.unwrap();
    assert!(
        !annotations.keys().any(|k| k.starts_with("cert-manager.io/")),
        "the operator makes the Certificate itself"
    );
    assert_eq!(annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"], "true");
    assert_eq!(
        annotations["traefik.ingress.kubernetes.io/router.tls"], "true",
        "Traefik serves it over TLS only"
    );
    assert_eq!(ing.spec.unwrap().tls.unwrap()[0].secret_name.as_deref(), Some("lyon-tls"));
    let cert = objects_issuer
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "Certificate")
        .expect("a Certificate");
    assert_eq!(cert.metadata.name.as_deref(), Some("lyon-tls"));
    assert_eq!(cert.data["spec"]["secretName"], "lyon-tls");
    assert_eq!(cert.data["spec"]["dnsNames"][0], "emr.lyon.example.fr");
    assert_eq!(cert.data["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(cert.data["spec"]["issuerRef"]["name"], "letsencrypt");
    assert!(!kind_names(&objects_secret).iter().any(|n| n.starts_with("Certificate/")));
}

/// A clinic on the platform's Gateway: its HTTPRoutes name the listeners the policy declares,
/// never a Gateway of their own, and only the Gateway's proxies may reach the clinic's gateway.
#[test]
fn routes_attach_to_the_listeners_the_platform_declares() {
    let policy = clinic_operator::policy::Policy::from_yaml(
        "gateways:\n  - {namespace: gateway-system, name: public, listener: https, redirectListener: http, proxyNamespace: gateway-proxies, default: true}\n  - {namespace: gateway-system, name: internal, listener: websecure}\n",
        "test",
    )
    .unwrap();
    let routed = |rest: &str| {
        policy.admit(clinic(&format!("  route:\n    host: emr.lyon.example.fr\n{rest}"))).unwrap()
    };
    let all = objects(&routed(""));
    let names = kind_names(&all);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("Ingress/") || n.starts_with("Certificate/") || n.starts_with("Gateway/"))
    );
    let route = |name: &str| {
        all.iter()
            .find(|o| {
                o.types.as_ref().unwrap().kind == "HTTPRoute" && o.metadata.name.as_deref() == Some(name)
            })
            .unwrap_or_else(|| panic!("HTTPRoute {name}"))
            .data["spec"]
            .clone()
    };
    let https = route("lyon");
    assert_eq!(
        https["parentRefs"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": "public", "sectionName": "https"}])
    );
    assert_eq!(https["hostnames"], serde_json::json!(["emr.lyon.example.fr"]));
    let backend = &https["rules"][0]["backendRefs"][0];
    assert_eq!((backend["name"].as_str(), backend["port"].as_i64()), (Some("lyon-gateway"), Some(80)));
    let redirect = route("lyon-redirect");
    assert_eq!(redirect["parentRefs"][0]["sectionName"], "http");
    assert_eq!(
        redirect["rules"][0]["filters"][0]["requestRedirect"],
        serde_json::json!({"scheme": "https", "statusCode": 301})
    );
    assert!(redirect["rules"][0].get("backendRefs").is_none(), "the redirect serves nothing");
    // A Gateway without a plain-HTTP listener gets one route.
    let internal = objects(&routed("    gateway: {namespace: gateway-system, name: internal}\n"));
    assert_eq!(kind_names(&internal).iter().filter(|n| n.starts_with("HTTPRoute/")).count(), 1);

    let c = routed("");
    let policies = desired::network::build(&c);
    let gateway_policy =
        policies.iter().find(|p| p.metadata.name.as_deref() == Some("lyon-gateway")).unwrap();
    let from: Vec<_> = gateway_policy
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .iter()
        .flatten()
        .filter(|r| port_ok(&r.ports, gateway::PORT))
        .flat_map(|r| r.from.clone().unwrap_or_default())
        .collect();
    let namespaces: Vec<String> = from
        .iter()
        .filter_map(|p| {
            p.namespace_selector.as_ref()?.match_labels.as_ref()?.get("kubernetes.io/metadata.name").cloned()
        })
        .collect();
    assert_eq!(namespaces, ["gateway-proxies"], "only the Gateway's proxies reach the gateway");
    assert_eq!(c.url(), "https://emr.lyon.example.fr/openmrs/spa/home");
}

#[test]
fn images_follow_registry_mirror_digest_and_pull_secrets() {
    let digest = format!("registry.example.fr/openmrs/frontend@sha256:{}", "a".repeat(64));
    let c = clinic(&format!(
        "  images:\n    registry: registry.example.fr/mirror\n    pullSecrets: [mirror-pull]\n    pullPolicy: Always\n  openmrs:\n    frontend:\n      image: {digest}\n"
    ));
    let objects = objects(&c);
    let backend: StatefulSet = typed(&objects, "StatefulSet", "lyon-backend");
    let pod = backend.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example.fr/mirror/openmrs/openmrs-reference-application-3-backend:3.7.x-no-demo")
    );
    assert_eq!(pod.containers[0].image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "mirror-pull");
    let frontend: Deployment = typed(&objects, "Deployment", "lyon-frontend");
    assert_eq!(
        frontend.spec.unwrap().template.spec.unwrap().containers[0].image.as_deref(),
        Some(digest.as_str())
    );
}

#[test]
fn placement_reaches_the_pods() {
    let c = clinic(
        "  database:\n    placement:\n      nodeSelector:\n        pool: clinic-data\n      tolerations:\n        - key: dedicated\n          operator: Equal\n          value: clinic\n          effect: NoSchedule\n",
    );
    let objects = objects(&c);
    let db: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
    let pod = db.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "clinic-data");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
}

#[test]
fn vertical_recommendations_watch_every_workload_and_change_no_pod() {
    let plain = objects(&clinic("  {}\n"));
    assert!(plain.iter().all(|o| o.types.as_ref().unwrap().kind != "VerticalPodAutoscaler"));
    let asked = objects(&clinic("  autoscaling: {verticalRecommendations: true}\n"));
    let vpas: Vec<&DynamicObject> =
        asked.iter().filter(|o| o.types.as_ref().unwrap().kind == "VerticalPodAutoscaler").collect();
    let targets: BTreeSet<(String, String)> = vpas
        .iter()
        .map(|v| {
            let target = &v.data["spec"]["targetRef"];
            assert_eq!(target["apiVersion"], "apps/v1");
            // Named after its workload, in recommendation mode only: "Off" never evicts nor
            // resizes, so it cannot fight the HorizontalPodAutoscalers.
            assert_eq!(v.metadata.name.as_deref(), target["name"].as_str());
            assert_eq!(v.data["spec"]["updatePolicy"]["updateMode"], "Off");
            assert_eq!(
                v.data["spec"]["resourcePolicy"]["containerPolicies"],
                serde_json::json!([{"containerName": "*", "controlledResources": ["cpu", "memory"]}])
            );
            (target["kind"].as_str().unwrap().to_string(), target["name"].as_str().unwrap().to_string())
        })
        .collect();
    let workloads: BTreeSet<(String, String)> = asked
        .iter()
        .filter(|o| matches!(o.types.as_ref().unwrap().kind.as_str(), "StatefulSet" | "Deployment"))
        .map(|o| (o.types.as_ref().unwrap().kind.clone(), o.metadata.name.clone().unwrap()))
        .collect();
    assert_eq!(targets, workloads);
    // The pods are the same with or without.
    assert_eq!(pod_specs(&plain), pod_specs(&asked));
}

#[test]
fn replicas_prefer_distinct_nodes_and_zones_unless_told_otherwise() {
    let spread = |c: &Clinic| -> BTreeMap<String, Vec<(String, String)>> {
        pod_specs(&objects(c))
            .into_iter()
            .map(|(name, pod)| {
                let constraints = pod.topology_spread_constraints.unwrap_or_default();
                (name, constraints.into_iter().map(|t| (t.topology_key, t.when_unsatisfiable)).collect())
            })
            .collect()
    };
    let preferred = |key: &str| (key.to_string(), "ScheduleAnyway".to_string());
    let defaults = spread(&clinic("  {}\n"));
    for name in ["lyon-backend", "lyon-frontend", "lyon-gateway"] {
        assert_eq!(
            defaults[name],
            [preferred("kubernetes.io/hostname"), preferred("topology.kubernetes.io/zone")],
            "{name}"
        );
    }
    // A single MariaDB has nothing to spread.
    assert!(defaults["lyon-mariadb"].is_empty());
    // The component's own constraints replace the defaults.
    let own = spread(&clinic(
        "  openmrs:\n    frontend:\n      placement:\n        topologySpreadConstraints:\n          - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}\n",
    ));
    assert_eq!(
        own["lyon-frontend"],
        [("topology.kubernetes.io/zone".to_string(), "DoNotSchedule".to_string())]
    );
    assert_eq!(own["lyon-gateway"], defaults["lyon-gateway"]);
}

#[test]
fn residency_pins_every_pod_to_the_declared_regions() {
    let objects = objects(&clinic("  residency:\n    regions: [fr-par]\n    zones: [fr-par-1, fr-par-2]\n"));
    let pods = pod_specs(&objects);
    assert_eq!(pods.len(), 4);
    for (name, pod) in pods {
        let terms = pod
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .unwrap_or_else(|| panic!("{name}: no required node affinity"))
            .node_selector_terms;
        let reqs = terms[0].match_expressions.clone().unwrap();
        assert_eq!(reqs[0].key, "topology.kubernetes.io/region");
        assert_eq!(reqs[0].values.as_deref(), Some(&["fr-par".to_string()][..]));
        assert_eq!(reqs[1].key, "topology.kubernetes.io/zone");
    }
    assert!(pod_specs(&objects_without_autoscaling()).iter().all(|(_, p)| p.affinity.is_none()));
}

#[test]
fn render_never_shows_a_password() {
    let objects = objects(&clinic("  {}\n"));
    let secret: Secret = typed(&objects, "Secret", "lyon-db-credentials");
    let data = secret.string_data.unwrap();
    assert_eq!(data["root-password"], desired::secrets::PLACEHOLDER);
    assert_eq!(data["password"], desired::secrets::PLACEHOLDER);
    assert_eq!(data["username"], "openmrs");
}

#[test]
fn generated_passwords_are_long_random_and_distinct() {
    let c = clinic("  {}\n");
    let generated = desired::secrets::generated(&c);
    let a = desired::secrets::secret(&c, &generated[0], SecretValues::Generate).string_data.unwrap();
    let b = desired::secrets::secret(&c, &generated[0], SecretValues::Generate).string_data.unwrap();
    assert!(a["password"].len() >= 32 && a["password"].chars().all(|ch| ch.is_ascii_alphanumeric()));
    assert_ne!(a["password"], a["root-password"]);
    assert_ne!(a["password"], b["password"]);
}

#[test]
fn user_provided_secrets_are_referenced_not_generated() {
    let c = clinic(
        "  database:\n    credentialsSecretRef: lyon-db-from-vault\n  security:\n    adminPasswordSecretRef:\n      name: lyon-admin-from-vault\n      key: admin\n",
    );
    let objects = objects(&c);
    // Only the exporter's own account, the encryption keys and MariaDB's CA and certificate are
    // generated (they are the operator's, not the user's).
    let generated: Vec<String> =
        kind_names(&objects).into_iter().filter(|n| n.starts_with("Secret/")).collect();
    assert_eq!(
        generated,
        [
            "Secret/lyon-db-ca",
            "Secret/lyon-db-encryption",
            "Secret/lyon-db-tls",
            "Secret/lyon-mariadb-exporter"
        ]
    );
    let backend: StatefulSet = typed(&objects, "StatefulSet", "lyon-backend");
    let main = backend.spec.unwrap().template.spec.unwrap().containers[0].clone();
    assert_eq!(secret_ref(&main, "OMRS_DB_PASSWORD").0, "lyon-db-from-vault");
    assert_eq!(
        secret_ref(&main, "OMRS_ADMIN_USER_PASSWORD"),
        ("lyon-admin-from-vault".into(), "admin".into())
    );
}

// ---- Network: which pod may talk to which, computed from the rendered policies ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Pod(&'static str),
    IngressController,
    /// Prometheus' namespace (`monitoring` by default).
    Monitoring,
    Outside,
}

fn pod_labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), "lyon".to_string()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
    ])
}

fn selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    assert!(selector.match_expressions.is_none(), "evaluator handles matchLabels only");
    selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
}

fn peer_matches(
    peer: &k8s_openapi::api::networking::v1::NetworkPolicyPeer,
    who: Peer,
    controller_ns: &str,
) -> bool {
    match who {
        Peer::Pod(component) => {
            peer.namespace_selector.is_none()
                && peer.ip_block.is_none()
                && peer.pod_selector.as_ref().is_some_and(|s| selects(s, &pod_labels(component)))
        }
        Peer::IngressController => {
            peer.namespace_selector.as_ref().is_some_and(|ns| {
                selects(
                    ns,
                    &BTreeMap::from([("kubernetes.io/metadata.name".to_string(), controller_ns.to_string())]),
                )
            }) && peer.pod_selector.is_none()
        }
        Peer::Monitoring => {
            peer.namespace_selector.as_ref().is_some_and(|ns| {
                selects(
                    ns,
                    &BTreeMap::from([("kubernetes.io/metadata.name".to_string(), "monitoring".to_string())]),
                )
            }) && peer.pod_selector.is_none()
        }
        Peer::Outside => false,
    }
}

fn port_ok(ports: &Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>, port: i32) -> bool {
    match ports {
        None => true,
        Some(ports) => ports.iter().any(|p| {
            matches!(&p.port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) if *n == port)
                && p.protocol.as_deref() == Some("TCP")
        }),
    }
}

/// Whether `from` may open a TCP connection to `to` on `port` under `policies`.
fn allowed(policies: &[NetworkPolicy], from: Peer, to: Peer, port: i32) -> bool {
    let applies = |p: &NetworkPolicy, who: Peer, kind: &str| {
        let Peer::Pod(component) = who else { return false };
        let spec = p.spec.as_ref().unwrap();
        spec.policy_types.iter().flatten().any(|t| t == kind)
            && selects(spec.pod_selector.as_ref().unwrap(), &pod_labels(component))
    };
    let egress_ok = match from {
        Peer::Pod(_) => {
            let mine: Vec<_> = policies.iter().filter(|p| applies(p, from, "Egress")).collect();
            !mine.is_empty()
                && mine.iter().any(|p| {
                    p.spec.as_ref().unwrap().egress.iter().flatten().any(|r| {
                        port_ok(&r.ports, port)
                            && r.to.iter().flatten().any(|peer| peer_matches(peer, to, "ingress-nginx"))
                    })
                })
        }
        _ => true,
    };
    let ingress_ok = match to {
        Peer::Pod(_) => {
            let mine: Vec<_> = policies.iter().filter(|p| applies(p, to, "Ingress")).collect();
            !mine.is_empty()
                && mine.iter().any(|p| {
                    p.spec.as_ref().unwrap().ingress.iter().flatten().any(|r| {
                        port_ok(&r.ports, port)
                            && r.from.iter().flatten().any(|peer| peer_matches(peer, from, "ingress-nginx"))
                    })
                })
        }
        _ => true,
    };
    egress_ok && ingress_ok
}

#[test]
fn network_matrix_allows_exactly_the_platform_flows() {
    let c = clinic("  ingress:\n    host: emr.lyon.example.fr\n    tls:\n      secretName: cert\n");
    let policies = desired::network::build(&c);
    let peers = [
        Peer::Pod("gateway"),
        Peer::Pod("frontend"),
        Peer::Pod("backend"),
        Peer::Pod("database"),
        Peer::IngressController,
        Peer::Monitoring,
        Peer::Outside,
    ];
    let ports = [80, 443, 3306, 7800, 8080, 22, 9104, 9113, 8081];
    let expected: BTreeSet<(Peer, Peer, i32)> = [
        (Peer::IngressController, Peer::Pod("gateway"), gateway::PORT),
        (Peer::Monitoring, Peer::Pod("database"), monitoring::MYSQLD_EXPORTER_PORT),
        (Peer::Monitoring, Peer::Pod("gateway"), monitoring::NGINX_EXPORTER_PORT),
        (Peer::Pod("gateway"), Peer::Pod("frontend"), frontend::PORT),
        (Peer::Pod("gateway"), Peer::Pod("backend"), backend::PORT),
        (Peer::Pod("backend"), Peer::Pod("database"), database::PORT),
    ]
    .into_iter()
    .collect();
    let mut actual = BTreeSet::new();
    for from in peers {
        for to in peers {
            if matches!(to, Peer::IngressController | Peer::Monitoring | Peer::Outside)
                && !matches!(from, Peer::Pod(_))
            {
                continue;
            }
            for port in ports {
                if from != to && allowed(&policies, from, to, port) {
                    actual.insert((from, to, port));
                }
            }
        }
    }
    assert_eq!(actual, expected, "allowed flows differ (denied pairs included in the comparison)");
}

#[test]
fn extra_egress_opens_only_the_declared_destination() {
    let c = clinic("  security:\n    extraEgress:\n      - cidr: 10.20.0.0/16\n        port: 443\n");
    let policies = desired::network::build(&c);
    let backend = policies.iter().find(|p| p.metadata.name.as_deref() == Some("lyon-backend")).unwrap();
    let egress = backend.spec.as_ref().unwrap().egress.clone().unwrap();
    let to_lab =
        egress.iter().find(|r| r.to.iter().flatten().any(|p| p.ip_block.is_some())).expect("lab rule");
    assert_eq!(to_lab.to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "10.20.0.0/16");
    assert!(port_ok(&to_lab.ports, 443) && !port_ok(&to_lab.ports, 80));
    let others = policies.iter().filter(|p| p.metadata.name.as_deref() != Some("lyon-backend"));
    assert!(
        others.flat_map(|p| p.spec.as_ref().unwrap().egress.iter().flatten()).all(|r| r
            .to
            .iter()
            .flatten()
            .all(|p| p.ip_block.is_none()))
    );
}

#[test]
fn every_platform_pod_is_under_default_deny_and_gets_dns() {
    let policies = desired::network::build(&clinic("  {}\n"));
    let deny = policies.iter().find(|p| p.metadata.name.as_deref() == Some("lyon-default-deny")).unwrap();
    let spec = deny.spec.as_ref().unwrap();
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
    assert!(spec.ingress.iter().flatten().next().is_none() && spec.egress.iter().flatten().next().is_none());
    for component in ["gateway", "frontend", "backend", "database"] {
        assert!(selects(spec.pod_selector.as_ref().unwrap(), &pod_labels(component)));
    }
    let dns = policies.iter().find(|p| p.metadata.name.as_deref() == Some("lyon-allow-dns")).unwrap();
    let rule = &dns.spec.as_ref().unwrap().egress.as_ref().unwrap()[0];
    let ports: Vec<_> = rule.ports.iter().flatten().map(|p| p.protocol.clone().unwrap()).collect();
    assert_eq!(ports, ["UDP", "TCP"]);
}

#[test]
fn the_database_encrypts_at_rest_with_a_generated_key() {
    let c = clinic("  {}\n");
    let objects = objects(&c);
    let config: k8s_openapi::api::core::v1::ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    let cnf = &config.data.unwrap()["clinic.cnf"];
    for line in [
        "plugin_load_add = file_key_management",
        "file_key_management_filename = /etc/mysql/encryption/keyfile",
        "innodb_encrypt_tables = FORCE",
        "innodb_encrypt_log = ON",
        "innodb_encrypt_temporary_tables = ON",
        "encrypt_tmp_disk_tables = ON",
        "encrypt_tmp_files = ON",
        "aria_encrypt_tables = ON",
    ] {
        assert!(cnf.lines().any(|l| l == line), "{line} missing from {cnf}");
    }
    let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "encryption").expect("encryption volume");
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("lyon-db-encryption"));
    assert_eq!(secret.default_mode, Some(0o440), "readable by the mysql group only");
    let mount = pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == "encryption").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), (database::ENCRYPTION_DIR, Some(true)));

    // Generated once: a fresh 256-bit key as key 1, and a dump passphrase; never the same twice.
    let generated = desired::secrets::generated(&c);
    let keys = generated.iter().find(|g| g.name == "lyon-db-encryption").expect("generated");
    let make = || desired::secrets::secret(&c, keys, SecretValues::Generate).string_data.unwrap();
    let (a, b) = (make(), make());
    let keyfile = &a["keyfile"];
    let hex = keyfile.strip_prefix("1;").and_then(|k| k.strip_suffix('\n')).expect(keyfile);
    assert!(hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{keyfile}");
    assert_ne!(a["keyfile"], b["keyfile"]);
    assert!(a["dump-passphrase"].len() >= 32 && a["dump-passphrase"] != b["dump-passphrase"]);
    // `render` never shows a key.
    let shown: Secret = typed(&objects, "Secret", "lyon-db-encryption");
    let placeholder = &shown.string_data.unwrap()["keyfile"];
    assert_eq!(placeholder, &format!("1;{}\n", desired::secrets::PLACEHOLDER));
}

#[test]
fn without_encryption_at_rest_nothing_of_it_is_made() {
    let c = clinic("  database:\n    encryptAtRest: false\n");
    let objects = objects(&c);
    assert!(!kind_names(&objects).contains("Secret/lyon-db-encryption"));
    let config: k8s_openapi::api::core::v1::ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    assert!(!config.data.unwrap()["clinic.cnf"].contains("encrypt"));
    let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
    assert!(
        sts.spec.unwrap().template.spec.unwrap().volumes.iter().flatten().all(|v| v.name != "encryption")
    );
    let script = desired::backup::dump_script(&c);
    assert!(script.contains("| gzip -c > \"$file.tmp\"") && !script.contains("openssl"), "{script}");
}

#[test]
fn every_container_bounds_its_ephemeral_storage_above_its_empty_dirs() {
    // The builders write these quantities in Mi and Gi only.
    let mib = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        let (number, factor) = match q.0.strip_suffix("Gi") {
            Some(n) => (n, 1024),
            None => (q.0.strip_suffix("Mi").expect(&q.0), 1),
        };
        number.parse::<u64>().expect(&q.0) * factor
    };
    let objects = objects(&clinic("  {}\n"));
    let mut seen = 0;
    for (kind, name) in WORKLOADS {
        let pod = pod_of(&objects, kind, name);
        let volumes = pod.volumes.clone().unwrap_or_default();
        for c in desired::all_containers(&pod) {
            let resources = c.resources.as_ref().unwrap();
            let request = &resources.requests.as_ref().unwrap()["ephemeral-storage"];
            let limit = mib(&resources.limits.as_ref().unwrap()["ephemeral-storage"]);
            let mounted: u64 = c
                .volume_mounts
                .iter()
                .flatten()
                .filter_map(|m| {
                    volumes.iter().find(|v| v.name == m.name)?.empty_dir.as_ref()?.size_limit.as_ref()
                })
                .map(mib)
                .sum();
            assert_eq!(mib(request), 64, "{name}/{}", c.name);
            assert_eq!(limit, 64 + mounted, "{name}/{}: logs plus its emptyDirs", c.name);
            seen += 1;
        }
    }
    assert!(seen >= 8, "{seen} containers");
}

#[test]
fn liveness_never_repeats_readiness() {
    let objects = objects(&clinic("  {}\n"));
    for (kind, name) in WORKLOADS {
        let pod = pod_of(&objects, kind, name);
        for c in &pod.containers {
            let (Some(ready), Some(live)) = (&c.readiness_probe, &c.liveness_probe) else { continue };
            let handler = |p: &k8s_openapi::api::core::v1::Probe| {
                serde_json::json!([p.http_get, p.tcp_socket, p.exec, p.grpc])
            };
            assert_ne!(handler(ready), handler(live), "{name}/{}", c.name);
        }
    }
}

/// The platform's workloads, by kind and name.
const WORKLOADS: [(&str, &str); 4] = [
    ("StatefulSet", "lyon-mariadb"),
    ("StatefulSet", "lyon-backend"),
    ("Deployment", "lyon-frontend"),
    ("Deployment", "lyon-gateway"),
];

fn pod_of(objects: &[DynamicObject], kind: &str, name: &str) -> PodSpec {
    match kind {
        "StatefulSet" => typed::<StatefulSet>(objects, kind, name).spec.unwrap().template.spec.unwrap(),
        _ => typed::<Deployment>(objects, kind, name).spec.unwrap().template.spec.unwrap(),
    }
}

/// A serving pod being deleted keeps answering while the Services withdraw it: every container
/// of the backend, frontend and gateway pods waits before it is signalled, within the grace
/// period; MariaDB, which no Service balances, stops at once.
#[test]
fn serving_pods_drain_before_they_stop() {
    let objects = objects(&clinic("  {}\n"));
    let pods: Vec<(&str, PodSpec)> = vec![
        (
            "backend",
            typed::<StatefulSet>(&objects, "StatefulSet", "lyon-backend")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
        ),
        (
            "frontend",
            typed::<Deployment>(&objects, "Deployment", "lyon-frontend").spec.unwrap().template.spec.unwrap(),
        ),
        (
            "gateway",
            typed::<Deployment>(&objects, "Deployment", "lyon-gateway").spec.unwrap().template.spec.unwrap(),
        ),
    ];
    for (name, pod) in pods {
        let grace = pod.termination_grace_period_seconds.unwrap_or(30);
        for container in &pod.containers {
            let sleep = container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.sleep.as_ref())
                .unwrap_or_else(|| panic!("{name}/{}: no preStop sleep", container.name));
            assert_eq!(sleep.seconds, 5, "{name}/{}", container.name);
            assert!(
                sleep.seconds * 3 <= grace,
                "{name}: {grace} s of grace leave too little after the drain"
            );
        }
    }
    let mariadb =
        typed::<StatefulSet>(&objects, "StatefulSet", "lyon-mariadb").spec.unwrap().template.spec.unwrap();
    assert!(mariadb.containers.iter().all(|c| c.lifecycle.is_none()));
}
