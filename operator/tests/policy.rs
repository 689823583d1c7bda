//! The platform team's policy: what a tenant's spec may point at is refused outside it, with the
//! field named; compliance is judged against it, never on the tenant's word.

mod common;

use clinic_operator::policy::Policy;
use common::clinic;

fn refused_field(policy: &Policy, spec: &str) -> String {
    match policy.admit(clinic(spec)) {
        Ok(_) => panic!("the policy allowed:\n{spec}"),
        Err(e) => e.field,
    }
}

#[test]
fn the_default_policy_allows_the_minimal_clinic() {
    Policy::default().admit(clinic("  {}\n")).expect("a default clinic is allowed");
}

/// Every field a hostile tenant could point at another tenant or at the cluster.
#[test]
fn cross_namespace_targets_outside_the_default_policy_are_refused() {
    let policy = Policy::default();
    for (spec, field) in [
        ("  backup:\n    veleroNamespace: kube-system\n", "spec.backup.veleroNamespace"),
        ("  backup:\n    storageLocation: other-hospital-bucket\n", "spec.backup.storageLocation"),
        (
            "  monitoring:\n    dashboard:\n      namespace: kube-system\n",
            "spec.monitoring.dashboard.namespace",
        ),
        ("  monitoring:\n    prometheusNamespace: clinic-other\n", "spec.monitoring.prometheusNamespace"),
        (
            "  ingress:\n    host: emr.lyon.example.fr\n    controllerNamespace: clinic-other\n    tls: {secretName: t}\n",
            "spec.ingress.controllerNamespace",
        ),
        ("  security:\n    enforcePodSecurity: false\n", "spec.security.enforcePodSecurity"),
        // No Gateway is listed by default: the platform team names its own.
        ("  route:\n    host: emr.lyon.example.fr\n", "spec.route.gateway"),
    ] {
        assert_eq!(refused_field(&policy, spec), field, "{spec}");
    }
    // The clinic's own namespace is always a place for its dashboard.
    policy.admit(clinic("  monitoring:\n    dashboard:\n      namespace: clinic-lyon\n")).unwrap();
}

/// A clustered backend's Elasticsearch: its own namespace and hosts outside the cluster need no
/// permission (the latter reach nothing without `extraEgress`); another namespace must be listed.
#[test]
fn an_elasticsearch_in_another_namespace_must_be_listed() {
    let clustered = |uris: &str| {
        format!(
            "  openmrs:\n    backend:\n      replicas: 2\n      clustering:\n        elasticsearchUris: '{uris}'\n        attachmentsClaimName: shared\n"
        )
    };
    let field = "spec.openmrs.backend.clustering.elasticsearchUris";
    let default = Policy::default();
    for uris in ["http://es.search:9200", "http://es:9200,https://es.search.svc.cluster.local"] {
        assert_eq!(refused_field(&default, &clustered(uris)), field, "{uris}");
    }
    for uris in [
        "http://es:9200",
        "http://es.clinic-lyon.svc:9200",
        "https://search.example.org",
        "http://10.1.2.3:9200",
    ] {
        default.admit(clinic(&clustered(uris))).unwrap_or_else(|e| panic!("{uris}: {e:?}"));
    }
    let listed = Policy { search_namespaces: vec!["search".into()], ..Policy::default() };
    let admitted =
        listed.admit(clinic(&clustered("http://es.search:9200,http://es-2.search.svc:9201"))).unwrap();
    assert_eq!(admitted.search_services(), [("search".to_string(), 9200), ("search".to_string(), 9201)]);
}

/// A PriorityClass decides whose pods the scheduler evicts: only the platform's are allowed, and
/// the pods of the component that names one run with it.
#[test]
fn priority_classes_are_the_platforms() {
    let spec = "  database:\n    placement: {priorityClassName: clinic-critical}\n";
    assert_eq!(refused_field(&Policy::default(), spec), "spec.database.placement.priorityClassName");
    let listed = Policy { priority_classes: vec!["clinic-critical".into()], ..Policy::default() };
    assert_eq!(
        refused_field(
            &listed,
            "  openmrs:\n    gateway:\n      placement: {priorityClassName: system-cluster-critical}\n"
        ),
        "spec.openmrs.gateway.placement.priorityClassName"
    );
    let clinic = listed.admit(clinic(spec)).unwrap();
    let objects =
        clinic_operator::desired::objects(&clinic, &clinic_operator::desired::SecretValues::Placeholder);
    let class_of = |name: &str| {
        let sts = objects
            .iter()
            .find(|o| {
                o.types.as_ref().is_some_and(|t| t.kind == "StatefulSet")
                    && o.metadata.name.as_deref() == Some(name)
            })
            .unwrap();
        sts.data["spec"]["template"]["spec"]["priorityClassName"].clone()
    };
    assert_eq!(class_of("lyon-mariadb"), "clinic-critical");
    assert!(class_of("lyon-backend").is_null(), "only the component that names it");
}

#[test]
fn elasticsearch_uris_that_do_not_parse_are_refused() {
    use clinic_operator::model::{SearchEndpoint, search_endpoints};
    for bad in ["http://", "http://es:99999", "http://es:9200,"] {
        let err = search_endpoints(bad, "clinic-lyon").expect_err(bad);
        assert_eq!(err.field, "spec.openmrs.backend.clustering.elasticsearchUris");
        assert!(err.message.contains("URL") || err.message.contains("host"), "{bad}: {}", err.message);
    }
    assert_eq!(
        search_endpoints("https://es", "clinic-lyon").unwrap(),
        [SearchEndpoint::InCluster { namespace: "clinic-lyon".into(), port: 443 }]
    );
}

#[test]
fn a_narrowed_policy_refuses_hosts_issuers_registries_regions_and_cluster_networks() {
    let policy = Policy::from_yaml(
        "policy:\n  ingressHosts: ['*.clinique-lyon.example.fr', emr.example.fr]\n  clusterIssuers: [letsencrypt-production]\n  registries: [registry.sante.example.fr/mirror]\n  residencyRegions: [fr-par]\n  deniedEgressCidrs: [10.244.0.0/16, 10.96.0.0/12]\n",
        "test",
    )
    .unwrap();
    let tls = "    tls:\n      issuerRef: {name: letsencrypt-production}\n";
    let mirror = "  images:\n    registry: registry.sante.example.fr/mirror\n";
    let ok = format!("  ingress:\n    host: dossiers.clinique-lyon.example.fr\n{tls}{mirror}");
    policy.admit(clinic(&ok)).unwrap_or_else(|e| panic!("{e}"));
    for (spec, field) in [
        // Another clinic's host on the shared ingress controller, and a look-alike domain.
        (
            format!("  ingress:\n    host: dossiers.clinique-nice.example.fr\n{tls}{mirror}"),
            "spec.ingress.host",
        ),
        (format!("  ingress:\n    host: evilclinique-lyon.example.fr\n{tls}{mirror}"), "spec.ingress.host"),
        (
            format!(
                "  ingress:\n    host: emr.example.fr\n    tls:\n      issuerRef: {{name: internal-ca}}\n{mirror}"
            ),
            "spec.ingress.tls.issuerRef.name",
        ),
        ("  images:\n    registry: registry.sante.example.fr/mirror2\n".into(), "spec.images.registry"),
        ("  {}\n".into(), "spec.images.registry"),
        (format!("{mirror}  database:\n    image: docker.io/library/mariadb:10.11\n"), "spec.database.image"),
        (
            format!(
                "{mirror}  openmrs:\n    backend:\n      image: registry.sante.example.fr.evil.io/mirror/backend:1\n"
            ),
            "spec.openmrs.backend.image",
        ),
        (format!("{mirror}  residency:\n    regions: [fr-par, us-east-1]\n"), "spec.residency.regions[1]"),
        (
            format!(
                "{mirror}  security:\n    extraEgress:\n      - {{cidr: 10.40.0.0/24, port: 443}}\n      - {{cidr: 10.96.0.0/24, port: 443}}\n"
            ),
            "spec.security.extraEgress[1].cidr",
        ),
        (
            format!("{mirror}  security:\n    extraEgress:\n      - {{cidr: 10.0.0.0/8, port: 443}}\n"),
            "spec.security.extraEgress[0].cidr",
        ),
    ] {
        assert_eq!(refused_field(&policy, &spec), field, "{spec}");
    }
    // An Issuer in the clinic's own namespace needs no allow-listing.
    let own = format!(
        "  ingress:\n    host: emr.example.fr\n    tls:\n      issuerRef: {{name: mine, kind: Issuer}}\n{mirror}"
    );
    policy.admit(clinic(&own)).unwrap();
}

/// A route attaches to a Gateway the platform lists, with the listener, redirect and proxies'
/// namespace the platform declares; the tenant picks among them and nothing else.
#[test]
fn routes_attach_only_to_the_platforms_gateways() {
    let policy = Policy::from_yaml(
        "ingressHosts: ['*.example.fr']\ngateways:\n  - {namespace: gateway-system, name: public, listener: https, redirectListener: http, default: true}\n  - {namespace: envoy, name: internal, listener: websecure, proxyNamespace: envoy-gateway-system}\n",
        "test",
    )
    .unwrap();
    let route = |rest: &str| format!("  route:\n    host: emr.lyon.example.fr\n{rest}");
    let default = policy.admit(clinic(&route(""))).unwrap();
    let gateway = default.gateway.expect("the default Gateway");
    assert_eq!((gateway.name.as_str(), gateway.listener.as_str()), ("public", "https"));
    assert_eq!(gateway.proxy_namespace(), "gateway-system");
    let named = policy.admit(clinic(&route("    gateway: {namespace: envoy, name: internal}\n"))).unwrap();
    assert_eq!(named.gateway.as_ref().map(|g| g.proxy_namespace()), Some("envoy-gateway-system"));
    for (spec, field) in [
        (route("    gateway: {namespace: envoy, name: public}\n"), "spec.route.gateway"),
        (route("    gateway: {namespace: clinic-nice, name: theirs}\n"), "spec.route.gateway"),
        ("  route:\n    host: emr.lyon.evil.io\n".to_string(), "spec.route.host"),
    ] {
        assert_eq!(refused_field(&policy, &spec), field, "{spec}");
    }
    // Without a route, no Gateway is resolved.
    assert_eq!(policy.admit(clinic("  {}\n")).unwrap().gateway, None);
    let two_defaults = "gateways:\n  - {namespace: a, name: a, listener: https, default: true}\n  - {namespace: b, name: b, listener: https, default: true}\n";
    assert!(Policy::from_yaml(two_defaults, "test").is_err(), "two default Gateways");
    assert!(Policy::from_yaml("gateways:\n  - {namespace: a, name: a}\n", "test").is_err(), "no listener");
}

#[test]
fn residency_is_compliant_only_in_regions_the_platform_approves() {
    let default = Policy::default();
    let approving =
        Policy::from_yaml("residencyRegions: [fr-par]\nresidencyZones: [fr-par-1]\n", "test").unwrap();
    let fr = clinic("  residency:\n    regions: [fr-par]\n");
    let zoned = clinic("  residency:\n    regions: [fr-par]\n    zones: [fr-par-2]\n");
    let none = clinic("  {}\n");
    // Any region the tenant names was counted before; now none is, until the platform approves.
    assert!(!default.residency_approved(&fr.spec));
    assert!(approving.residency_approved(&fr.spec));
    assert!(!approving.residency_approved(&zoned.spec), "an unapproved zone");
    assert!(!approving.residency_approved(&none.spec));
}

#[test]
fn policy_files_are_checked_and_the_chart_values_read_alike() {
    assert!(Policy::from_yaml("veleroNamespace: [velero]\n", "test").is_err(), "a misspelt key");
    assert!(Policy::from_yaml("deniedEgressCidrs: [10.0.0.0/33]\n", "test").is_err(), "not a CIDR");
    assert!(Policy::from_yaml("backupDeletionDelay: a week\n", "test").is_err(), "not a duration");
    let delay = Policy::from_yaml("backupDeletionDelay: 36h\n", "test").unwrap().backup_deletion_delay();
    assert_eq!(delay, std::time::Duration::from_secs(36 * 3600));
    assert_eq!(Policy::from_yaml("", "test").unwrap(), Policy::default());
    let bare = Policy::from_yaml("registries: [docker.io]\n", "bare").unwrap();
    let values =
        Policy::from_yaml("image: {tag: x}\npolicy:\n  registries: [docker.io]\n", "values").unwrap();
    assert_eq!(bare, values);
    // The example a platform team starts from is a valid policy and allows the examples.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example =
        Policy::from_file(std::path::Path::new(&format!("{root}/examples/platform-values.yaml"))).unwrap();
    for file in [
        "examples/minimal.yaml",
        "examples/production.yaml",
        "examples/gateway.yaml",
        "examples/high-availability.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        clinic_operator::render::render_with(&text, "default", &example)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The chart's default `policy` values are the operator's default policy: installing the chart
/// without a `policy` changes nothing.
#[test]
fn the_charts_default_policy_is_the_operators() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let values = std::fs::read_to_string(format!("{root}/charts/clinic-operator/values.yaml")).unwrap();
    assert_eq!(Policy::from_yaml(&values, "values.yaml").unwrap(), Policy::default());
}

fn ingress_annotations(policy: &Policy) -> std::collections::BTreeMap<String, String> {
    let spec = "  ingress:\n    host: emr.lyon.example.fr\n    tls: {secretName: lyon-cert}\n";
    let clinic = policy.admit(clinic(spec)).expect("allowed");
    clinic_operator::desired::ingress::build(&clinic).unwrap().metadata.annotations.unwrap()
}

/// TLS at the edge: ingress-nginx serves each clinic the platform's cipher suites (strong ones
/// by default), Traefik routes it with the platform's TLSOption when the policy names one.
#[test]
fn the_ingress_takes_the_platforms_tls_settings() {
    let defaults = ingress_annotations(&Policy::default());
    assert_eq!(
        defaults["nginx.ingress.kubernetes.io/ssl-ciphers"],
        clinic_operator::policy::STRONG_TLS12_CIPHERS
    );
    assert_eq!(defaults["nginx.ingress.kubernetes.io/ssl-prefer-server-ciphers"], "true");
    assert!(!defaults.contains_key("traefik.ingress.kubernetes.io/router.tls.options"));

    let policy = Policy::from_yaml(
        "ingressTls:\n  nginxCiphers: ECDHE-ECDSA-AES256-GCM-SHA384\n  traefikTlsOptions: traefik-clinics@kubernetescrd\n",
        "test",
    )
    .unwrap();
    let annotations = ingress_annotations(&policy);
    assert_eq!(annotations["nginx.ingress.kubernetes.io/ssl-ciphers"], "ECDHE-ECDSA-AES256-GCM-SHA384");
    assert_eq!(
        annotations["traefik.ingress.kubernetes.io/router.tls.options"],
        "traefik-clinics@kubernetescrd"
    );

    // Both land in the controller's configuration: nothing else than their own syntax.
    for bad in [
        "ingressTls:\n  nginxCiphers: 'HIGH; return 200'\n",
        "ingressTls:\n  nginxCiphers: ''\n",
        "ingressTls:\n  traefikTlsOptions: clinics\n",
        "ingressTls:\n  traefikTlsOptions: 'a@b c'\n",
    ] {
        let error = Policy::from_yaml(bad, "test").expect_err(bad).to_string();
        assert!(error.contains("ingressTls."), "{bad}: {error}");
    }
}

/// The default suites, as OpenSSL reads them: each one TLS 1.2, ECDHE (forward secrecy) and
/// AEAD; none with CBC, RSA key exchange or SHA-1 MACs.
#[test]
fn the_default_ingress_ciphers_are_ecdhe_and_aead_only() {
    let out = std::process::Command::new("openssl")
        .args(["ciphers", "-v", clinic_operator::policy::STRONG_TLS12_CIPHERS])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    // OpenSSL 3 lists its TLS 1.3 suites whatever the list says (all AEAD; the controller's).
    let suites: Vec<&str> = listing.lines().filter(|l| !l.contains(" TLSv1.3 ")).collect();
    assert_eq!(suites.len(), clinic_operator::policy::STRONG_TLS12_CIPHERS.split(':').count(), "{listing}");
    for suite in suites {
        let fields: Vec<&str> = suite.split_whitespace().collect();
        assert_eq!(fields[1], "TLSv1.2", "{suite}");
        assert_eq!(fields[2], "Kx=ECDH", "{suite}");
        assert!(fields[4].starts_with("Enc=AESGCM") || fields[4].starts_with("Enc=CHACHA20"), "{suite}");
        assert_eq!(fields[5], "Mac=AEAD", "{suite}");
    }
}
