//! The checked, defaulted model of one ClinicPlatform: what `validate` returns and every builder
//! takes. Rules the API server cannot express (or that a ClinicPlatform written before a schema
//! change may break) are checked here, before anything is applied.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::{ClinicPlatform, ClinicPlatformSpec};
use crate::policy::AllowedGateway;

/// Default registry of the upstream images.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A user error in a ClinicPlatform: names the field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// Path of the offending field, e.g. `spec.openmrs.backend.replicas`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl InvalidSpec {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// One platform component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Database,
    Backend,
    Frontend,
    Gateway,
    /// Objects shared by the whole platform (Secrets, default-deny policies, Ingress).
    Platform,
}

impl Component {
    /// Value of `app.kubernetes.io/component`.
    pub fn label(self) -> &'static str {
        match self {
            Component::Database => "database",
            Component::Backend => "backend",
            Component::Frontend => "frontend",
            Component::Gateway => "gateway",
            Component::Platform => "platform",
        }
    }

    /// Value of `app.kubernetes.io/name`.
    pub fn app_name(self) -> &'static str {
        match self {
            Component::Database => "mariadb",
            Component::Backend => "openmrs-backend",
            Component::Frontend => "openmrs-frontend",
            Component::Gateway => "openmrs-gateway",
            Component::Platform => "openmrs",
        }
    }
}

/// Where a workload finds a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    pub secret: String,
    pub key: String,
}

/// The checked model of one clinic.
#[derive(Debug, Clone)]
pub struct Clinic {
    pub name: String,
    pub namespace: String,
    pub spec: ClinicPlatformSpec,
    /// Owner reference set on every same-namespace child (absent when rendering a file whose
    /// object has no uid yet: `render` then shows children without it).
    pub owner: Option<OwnerReference>,
    /// Whether the operator generates the database credentials Secret.
    pub generates_db_credentials: bool,
    /// Whether the operator generates the admin password Secret.
    pub generates_admin_password: bool,
    /// Images kept at what runs now while an upgrade waits for its backup (the upgrade gate).
    pub held_images: Option<HeldImages>,
    /// Whether the confirmation annotation holds the ClinicPlatform's uid (see
    /// [`crate::api::CONFIRM_DELETION_ANNOTATION`]).
    pub deletion_confirmed: bool,
    /// The platform Gateway `spec.route` attaches to, as the policy describes it; set when the
    /// policy admits the clinic ([`crate::policy::Policy::admit`]), `None` without a route.
    pub gateway: Option<AllowedGateway>,
    /// Where the backend's traces go, as the policy says; set when the policy admits a clinic
    /// with `spec.tracing.enabled`, `None` otherwise.
    pub tracing: Option<crate::policy::TracingPolicy>,
    /// MariaDB's certificate (Secret `<name>-db-tls`) as this pass found or issued it: its end
    /// of validity goes into MariaDB's pod template, since MariaDB reads its certificate at
    /// start only. `None` before it exists (and in `render`).
    pub database_certificate: Option<crate::api::CertificateStatus>,
    /// The backend's certificate (Secret `<name>-backend-tls`) as this pass found or issued it
    /// (`None` without `spec.openmrs.backend.tls`, before it exists, and in `render`).
    pub backend_certificate: Option<crate::api::CertificateStatus>,
    /// TLS at the Ingress controller, as the policy says (its default until admitted).
    pub ingress_tls: crate::policy::IngressTlsPolicy,
    /// Where the clinic's alerts go, by severity, as the policy says (`None` until admitted, and
    /// without the policy's `alertRouting`).
    pub alert_routing: Option<crate::policy::AlertRouting>,
    /// The mesh the clinic's pods join, as the policy describes it; set when the policy admits
    /// a clinic with `spec.security.mtls`, `None` otherwise.
    pub mesh: Option<crate::policy::MeshPolicy>,
    /// How the operator probes the clinic through its gateway, as the policy says (`None`
    /// until admitted, and without the policy's `clinicProbe`).
    pub probe: Option<crate::policy::ClinicProbePolicy>,
    /// The replicated MariaDB of `spec.database.highAvailability`, as the policy admits it
    /// (`None` without it, and until admitted).
    pub database_cluster: Option<DatabaseCluster>,
}

/// A replicated MariaDB run by the mariadb-operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseCluster {
    /// MariaDB servers: one primary, the others replicas.
    pub replicas: i32,
    /// Where the mariadb-operator runs (the policy's `databaseOperatorNamespace`).
    pub operator_namespace: String,
}

/// The images the workloads run now, kept while an upgrade is gated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldImages {
    pub backend: Option<String>,
    pub frontend: Option<String>,
    pub gateway: Option<String>,
    pub database: Option<String>,
}

/// Image path of the upstream MariaDB image (under the registry).
pub const MARIADB_IMAGE_PATH: &str = "library/mariadb";
/// Image path of the upstream OpenMRS backend image (under the registry).
pub const BACKEND_IMAGE_PATH: &str = "openmrs/openmrs-reference-application-3-backend";

/// The `(major, minor)` release of a MariaDB version or image (`10.11`, `10.11.9`,
/// `mirror/mariadb:11.4-noble`); `None` when it does not say (a digest, a custom tag). MariaDB
/// upgrades its data files across releases and cannot read them back with an older one.
pub fn mariadb_release(version_or_image: &str) -> Option<(u32, u32)> {
    let tag = version_or_image.rsplit_once(':').map_or(version_or_image, |(_, tag)| tag);
    let mut parts = tag.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Clinic {
    /// Name of a child: `<clinic>-<suffix>`.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{}", self.name, suffix)
    }

    /// Standard labels of a child of `component`.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert("app.kubernetes.io/name".into(), component.app_name().into());
        labels.insert("app.kubernetes.io/part-of".into(), "openmrs".into());
        labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
        labels
    }

    /// The labels that select a component's pods (stable: part of immutable selectors).
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            ("app.kubernetes.io/component".to_string(), component.label().to_string()),
        ])
    }

    /// What deleting the clinic does to its data now: `Delete` only when asked for and confirmed.
    pub fn deletion_policy(&self) -> crate::api::DeletionPolicy {
        match self.spec.deletion_policy {
            crate::api::DeletionPolicy::Delete if self.deletion_confirmed => {
                crate::api::DeletionPolicy::Delete
            }
            _ => crate::api::DeletionPolicy::Retain,
        }
    }

    /// Whether a deletion sets the clinic's backups to expire.
    pub fn backups_expire_on_deletion(&self) -> bool {
        self.deletion_policy() == crate::api::DeletionPolicy::Delete && self.spec.backup.delete_with_clinic
    }

    /// Owner references of same-namespace children.
    pub fn owner_references(&self) -> Option<Vec<OwnerReference>> {
        self.owner.clone().map(|o| vec![o])
    }

    pub fn db_credentials_secret(&self) -> String {
        match &self.spec.database.credentials_secret_ref {
            Some(name) => name.clone(),
            None => self.child_name("db-credentials"),
        }
    }

    /// The generated Secret with MariaDB's encryption key file and the dump's passphrase.
    pub fn encryption_secret(&self) -> String {
        self.child_name("db-encryption")
    }

    /// Whether MariaDB serves TLS only.
    pub fn database_tls(&self) -> bool {
        self.spec.database.tls.enabled
    }

    /// Whether the gateway reaches the backend over TLS.
    pub fn backend_tls(&self) -> bool {
        self.spec.openmrs.backend.tls.enabled
    }

    /// Whether the clinic's own CA signs a certificate of the clinic (one wanted without an
    /// issuer named).
    pub fn runs_clinic_ca(&self) -> bool {
        crate::desired::internal_tls::Leaf::ALL.iter().any(|leaf| leaf.runs_ca(self))
    }

    /// The Secret with MariaDB's certificate, key and CA (`tls.crt`, `tls.key`, `ca.crt`), from
    /// cert-manager or the operator's CA.
    pub fn database_tls_secret(&self) -> String {
        self.child_name("db-tls")
    }

    /// The backend's certificate, key and CA, from cert-manager or the clinic's CA.
    pub fn backend_tls_secret(&self) -> String {
        self.child_name("backend-tls")
    }

    /// The generated Secret of the clinic's CA (`ca.crt`, `ca.key`); named when it signed
    /// MariaDB's certificate alone.
    pub fn clinic_ca_secret(&self) -> String {
        self.child_name("db-ca")
    }

    pub fn admin_password(&self) -> SecretKey {
        match &self.spec.security.admin_password_secret_ref {
            Some(r) => SecretKey { secret: r.name.clone(), key: r.key.clone() },
            None => SecretKey { secret: self.child_name("openmrs-admin"), key: "password".into() },
        }
    }

    /// Resolves a default upstream image (`docker.io/<path>:<tag>`) through the registry mirror,
    /// unless the component overrides the image.
    pub fn image(&self, override_image: Option<&String>, path: &str, tag: &str) -> String {
        if let Some(image) = override_image {
            return image.clone();
        }
        let registry = self.spec.images.registry.as_deref().unwrap_or(DEFAULT_REGISTRY);
        format!("{registry}/{path}:{tag}")
    }

    pub fn backend_image(&self) -> String {
        if let Some(held) = self.held_images.as_ref().and_then(|h| h.backend.clone()) {
            return held;
        }
        self.declared_backend_image()
    }

    /// The backend image the spec asks for (whether or not an upgrade gate holds it back).
    pub fn declared_backend_image(&self) -> String {
        let tag = if self.spec.openmrs.demo_data {
            self.spec.openmrs.version.clone()
        } else {
            format!("{}-no-demo", self.spec.openmrs.version)
        };
        self.image(self.spec.openmrs.backend.image.as_ref(), BACKEND_IMAGE_PATH, &tag)
    }

    pub fn frontend_image(&self) -> String {
        if let Some(held) = self.held_images.as_ref().and_then(|h| h.frontend.clone()) {
            return held;
        }
        self.image(
            self.spec.openmrs.frontend.image.as_ref(),
            "openmrs/openmrs-reference-application-3-frontend",
            &self.spec.openmrs.version,
        )
    }

    pub fn gateway_image(&self) -> String {
        if let Some(held) = self.held_images.as_ref().and_then(|h| h.gateway.clone()) {
            return held;
        }
        self.image(
            self.spec.openmrs.gateway.image.as_ref(),
            "openmrs/openmrs-reference-application-3-gateway",
            &self.spec.openmrs.version,
        )
    }

    pub fn database_image(&self) -> String {
        if let Some(held) = self.held_images.as_ref().and_then(|h| h.database.clone()) {
            return held;
        }
        self.declared_database_image()
    }

    /// The MariaDB image the spec asks for (whether or not an upgrade gate holds it back).
    pub fn declared_database_image(&self) -> String {
        self.image(self.spec.database.image.as_ref(), MARIADB_IMAGE_PATH, &self.spec.database.version)
    }

    /// The version an image of the upstream `path` is (its tag; the backend's without
    /// `-no-demo`), or the image itself when it is not the upstream one (an override).
    pub fn version_in_image(&self, image: &str, path: &str) -> String {
        let registry = self.spec.images.registry.as_deref().unwrap_or(DEFAULT_REGISTRY);
        match image.strip_prefix(&format!("{registry}/{path}:")) {
            Some(tag) if path == BACKEND_IMAGE_PATH => tag.trim_end_matches("-no-demo").to_string(),
            Some(tag) => tag.to_string(),
            None => image.to_string(),
        }
    }

    /// The in-cluster Elasticsearch Services a clustered backend searches through, as
    /// (namespace, port); none without clustering or for URIs outside the cluster.
    pub fn search_services(&self) -> Vec<(String, u16)> {
        let Some(clustering) = &self.spec.openmrs.backend.clustering else { return Vec::new() };
        // Checked when the model was built: a URI that does not parse opens nothing.
        search_endpoints(&clustering.elasticsearch_uris, &self.namespace)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|endpoint| match endpoint {
                SearchEndpoint::InCluster { namespace, port } => Some((namespace, port)),
                SearchEndpoint::Outside => None,
            })
            .collect()
    }

    /// The URL users reach: the public host (Ingress or route) over HTTPS, else the in-cluster
    /// gateway.
    pub fn url(&self) -> String {
        match self.public_host() {
            Some(host) => format!("https://{host}/openmrs/spa/home"),
            None => format!("http://{}.{}.svc/openmrs/spa/home", self.child_name("gateway"), self.namespace),
        }
    }

    /// The host the clinic is published on, by an Ingress or an HTTPRoute.
    pub fn public_host(&self) -> Option<&str> {
        let spec = &self.spec;
        spec.ingress.as_ref().map(|i| i.host.as_str()).or(spec.route.as_ref().map(|r| r.host.as_str()))
    }
}

/// Where one of `spec.openmrs.backend.clustering.elasticsearchUris` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchEndpoint {
    /// A Service of the cluster, as a pod resolves the host: `name` (the clinic's namespace),
    /// `name.namespace`, `name.namespace.svc` or `name.namespace.svc.cluster.local`.
    InCluster { namespace: String, port: u16 },
    /// Any other host (an IP address, a name of three labels or more): reached through
    /// `spec.security.extraEgress`, which the platform's denied networks bound.
    Outside,
}

/// Reads the comma-separated Elasticsearch URIs of a clustered backend.
pub fn search_endpoints(uris: &str, clinic_namespace: &str) -> Result<Vec<SearchEndpoint>, InvalidSpec> {
    const FIELD: &str = "spec.openmrs.backend.clustering.elasticsearchUris";
    uris.split(',')
        .map(str::trim)
        .map(|uri| {
            let url = reqwest::Url::parse(uri)
                .map_err(|e| InvalidSpec::new(FIELD, format!("{uri:?} is not a URL ({e})")))?;
            let (Some(_), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                return Err(InvalidSpec::new(FIELD, format!("{uri:?} names no host")));
            };
            // `domain` is none for an IP address.
            let Some(host) = url.domain() else { return Ok(SearchEndpoint::Outside) };
            let service =
                host.strip_suffix(".svc.cluster.local").or_else(|| host.strip_suffix(".svc")).unwrap_or(host);
            let labels: Vec<&str> = service.split('.').collect();
            Ok(match labels.as_slice() {
                [_] => SearchEndpoint::InCluster { namespace: clinic_namespace.to_string(), port },
                [_, namespace] => SearchEndpoint::InCluster { namespace: namespace.to_string(), port },
                _ => SearchEndpoint::Outside,
            })
        })
        .collect()
}

/// Value of `app.kubernetes.io/managed-by` on every child.
pub const MANAGED_BY: &str = "clinic-operator";

/// Checks a ClinicPlatform and returns its model, or the first user error.
///
/// First the CRD's own CEL rules run offline (so an object that bypassed admission, or a file
/// given to `render`, meets the same rules as `kubectl apply`), then the checks CEL cannot do.
pub fn validate(cp: &ClinicPlatform) -> Result<Clinic, InvalidSpec> {
    if let Some(first) = cel_errors(cp).into_iter().next() {
        return Err(first);
    }
    validate_beyond_cel(cp)
}

/// The checks CEL cannot do, for a ClinicPlatform whose CEL rules were already evaluated
/// ([`cel_errors`]; `render` reports all of them, so it does not run them twice).
pub fn validate_beyond_cel(cp: &ClinicPlatform) -> Result<Clinic, InvalidSpec> {
    let name = cp.name_any();
    if name.is_empty() {
        return Err(InvalidSpec::new("metadata.name", "is required"));
    }
    let namespace = cp
        .namespace()
        .ok_or_else(|| InvalidSpec::new("metadata.namespace", "is required: ClinicPlatform is namespaced"))?;
    check_dns_label("metadata.name", &name, 40)?;
    let spec = &cp.spec;

    for (field, resources) in [
        ("spec.openmrs.backend.resources", &spec.openmrs.backend.resources),
        ("spec.openmrs.frontend.resources", &spec.openmrs.frontend.resources),
        ("spec.openmrs.gateway.resources", &spec.openmrs.gateway.resources),
        ("spec.database.resources", &spec.database.resources),
    ] {
        if let Some(r) = resources {
            check_requests_within_limits(field, r)?;
        }
    }
    if let Some(name) = &spec.database.credentials_secret_ref {
        check_dns_subdomain("spec.database.credentialsSecretRef", name)?;
    }
    if let Some(r) = &spec.security.admin_password_secret_ref {
        check_dns_subdomain("spec.security.adminPasswordSecretRef.name", &r.name)?;
    }
    if let Some(secret) = spec.ingress.as_ref().and_then(|i| i.tls.secret_name.as_ref()) {
        check_dns_subdomain("spec.ingress.tls.secretName", secret)?;
    }
    for (i, secret) in spec.images.pull_secrets.iter().enumerate() {
        check_dns_subdomain(&format!("spec.images.pullSecrets[{i}]"), secret)?;
    }
    for (field, image) in [
        ("spec.openmrs.backend.image", &spec.openmrs.backend.image),
        ("spec.openmrs.frontend.image", &spec.openmrs.frontend.image),
        ("spec.openmrs.gateway.image", &spec.openmrs.gateway.image),
        ("spec.database.image", &spec.database.image),
    ] {
        if let Some(image) = image {
            check_image(field, image)?;
        }
    }

    if let Some(clustering) = &spec.openmrs.backend.clustering {
        search_endpoints(&clustering.elasticsearch_uris, &namespace)?;
    }
    if spec.database.high_availability.is_some() {
        if spec.security.mtls {
            return Err(InvalidSpec::new(
                "spec.security.mtls",
                "not with spec.database.highAvailability yet: the mesh policies select the operator's own MariaDB pods, not the mariadb-operator's",
            ));
        }
        if spec.database.tls.issuer_ref.is_some() {
            return Err(InvalidSpec::new(
                "spec.database.tls.issuerRef",
                "not with spec.database.highAvailability, where the mariadb-operator issues MariaDB's certificates from the clinic's CA",
            ));
        }
    }
    for (field, value) in [
        ("spec.backup.retention", &spec.backup.retention),
        ("spec.backup.rpo", &spec.backup.rpo),
        ("spec.backup.upgradeGateTimeout", &spec.backup.upgrade_gate_timeout),
    ] {
        parse_duration(field, value)?;
    }

    let owner = cp.controller_owner_ref(&());
    Ok(Clinic {
        name,
        namespace,
        generates_db_credentials: spec.database.credentials_secret_ref.is_none(),
        generates_admin_password: spec.security.admin_password_secret_ref.is_none(),
        held_images: None,
        deletion_confirmed: deletion_confirmed(cp),
        gateway: None,
        tracing: None,
        database_certificate: None,
        backend_certificate: None,
        ingress_tls: crate::policy::IngressTlsPolicy::default(),
        alert_routing: None,
        mesh: None,
        probe: None,
        database_cluster: None,
        spec: spec.clone(),
        owner,
    })
}

/// Whether the confirmation annotation names this very object: a value copied from another
/// clinic, or from an earlier object of the same name, confirms nothing.
fn deletion_confirmed(cp: &ClinicPlatform) -> bool {
    let confirmation = cp.annotations().get(crate::api::CONFIRM_DELETION_ANNOTATION);
    confirmation.is_some_and(|value| cp.metadata.uid.as_ref() == Some(value))
}

thread_local! {
    /// The CRD's CEL rules, compiled once per thread: compiling them is most of the cost of a
    /// validation (measured: 18 ms per ClinicPlatform without this cache).
    static CEL_RULES: Option<(kube::core::cel::Validator, kube::core::cel::CompiledSchema)> = {
        use kube::CustomResourceExt;
        let crd = ClinicPlatform::crd();
        crd.spec.versions.first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .map(|schema| (kube::core::cel::Validator::new(), kube::core::cel::compile_schema(&schema)))
    };
}

/// Every CEL rule of the CRD a ClinicPlatform breaks, evaluated offline as the API server
/// would at admission, each naming its field.
pub fn cel_errors(cp: &ClinicPlatform) -> Vec<InvalidSpec> {
    let Ok(object) = serde_json::to_value(cp) else { return Vec::new() };
    let verdict = CEL_RULES.with(|rules| match rules {
        Some((validator, compiled)) => validator.validate_compiled(compiled, &object, None),
        // The CRD always has a schema; without one there is nothing to check.
        None => Ok(()),
    });
    match verdict {
        Ok(()) => Vec::new(),
        Err(errors) if errors.as_slice().is_empty() => vec![InvalidSpec::new("spec", errors.to_string())],
        Err(errors) => errors.as_slice().iter().map(|e| cel_error(&e.field_path, &e.message)).collect(),
    }
}

/// Our CEL messages start with the field they are about (`replicas: must be ...`); rules on
/// shared types name only the leaf, so the validator's path completes them.
fn cel_error(field_path: &str, message: &str) -> InvalidSpec {
    let Some((named, rest)) = message.split_once(": ").filter(|(f, _)| !f.contains(' ')) else {
        return InvalidSpec::new(field_path, message);
    };
    let leaf = named.rsplit('.').next().unwrap_or(named);
    let field = if named.starts_with("spec.") || named.starts_with("metadata.") {
        // A rule on list items names the field with `[]`; the validator's path has the index.
        if without_indexes(field_path) == named.replace("[]", "") {
            field_path.to_string()
        } else {
            named.to_string()
        }
    } else if field_path.ends_with(leaf) {
        field_path.to_string()
    } else {
        format!("{field_path}.{named}")
    };
    InvalidSpec::new(field, rest)
}

/// `spec.items[0].port` as `spec.items.port`.
fn without_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

/// The model of a ClinicPlatform without checks, for clean-up of one that may no longer be valid:
/// only names, namespaces and the deletion policy are read from it.
pub fn unchecked(cp: &ClinicPlatform) -> Clinic {
    Clinic {
        name: cp.name_any(),
        namespace: cp.namespace().unwrap_or_default(),
        spec: cp.spec.clone(),
        owner: cp.controller_owner_ref(&()),
        generates_db_credentials: cp.spec.database.credentials_secret_ref.is_none(),
        generates_admin_password: cp.spec.security.admin_password_secret_ref.is_none(),
        held_images: None,
        deletion_confirmed: deletion_confirmed(cp),
        gateway: None,
        tracing: None,
        database_certificate: None,
        backend_certificate: None,
        ingress_tls: crate::policy::IngressTlsPolicy::default(),
        alert_routing: None,
        mesh: None,
        probe: None,
        database_cluster: None,
    }
}

/// A Go-style duration (`26h`, `90m`, `1h30m`).
pub fn parse_duration(field: &str, value: &str) -> Result<std::time::Duration, InvalidSpec> {
    humantime::parse_duration(value).map_err(|e| {
        InvalidSpec::new(field, format!("must be a duration such as 26h or 90m ({e}), got {value:?}"))
    })
}

fn check_dns_label(field: &str, value: &str, max: usize) -> Result<(), InvalidSpec> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidSpec::new(
            field,
            format!("must be a DNS label of at most {max} lower-case letters, digits and '-', got {value:?}"),
        ))
    }
}

fn check_dns_subdomain(field: &str, value: &str) -> Result<(), InvalidSpec> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(InvalidSpec::new(
            field,
            format!("must be a Kubernetes object name (DNS subdomain), got {value:?}"),
        ))
    }
}

fn check_image(field: &str, image: &str) -> Result<(), InvalidSpec> {
    let bad = image.is_empty()
        || image.chars().any(|c| c.is_whitespace() || c.is_control())
        || image.contains("://")
        || image.ends_with(':')
        || image.ends_with('@');
    if bad {
        return Err(InvalidSpec::new(
            field,
            format!(
                "must be an image reference such as registry.example.fr/openmrs/backend:3.7.x or repo@sha256:<digest>, got {image:?}"
            ),
        ));
    }
    if let Some((_, digest)) = image.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidSpec::new(field, "a digest must be sha256: followed by 64 hex digits"));
        }
    }
    Ok(())
}

fn check_requests_within_limits(
    field: &str,
    r: &k8s_openapi::api::core::v1::ResourceRequirements,
) -> Result<(), InvalidSpec> {
    let (Some(requests), Some(limits)) = (&r.requests, &r.limits) else {
        return Ok(());
    };
    for (resource, request) in requests {
        let Some(limit) = limits.get(resource) else {
            continue;
        };
        let (Some(req), Some(lim)) = (quantity_value(&request.0), quantity_value(&limit.0)) else {
            return Err(InvalidSpec::new(
                format!("{field}.{resource}"),
                format!("must be quantities such as 500m, 2 or 512Mi, got {:?} and {:?}", request.0, limit.0),
            ));
        };
        if req > lim {
            return Err(InvalidSpec::new(
                format!("{field}.requests.{resource}"),
                format!("request {} exceeds limit {}", request.0, limit.0),
            ));
        }
    }
    Ok(())
}

/// Parses the common Kubernetes quantity forms (plain, milli, binary and decimal suffixes).
pub(crate) fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * factor)
}
