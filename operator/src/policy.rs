//! The platform team's policy: what a clinic's spec may point at beyond its own namespace, and
//! what counts as compliant. Tenants write ClinicPlatforms; the platform team writes the policy
//! (the chart's `policy` values, a ConfigMap the operator reads at start, `--policy`), so that a
//! tenant's wish never widens what the operator does on its behalf.
//!
//! Every list has a default a fresh install works with; `*` in a list allows any value.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::api::{ClinicPlatformSpec, IssuerKind, RouteSpec};
use crate::model::{Clinic, DEFAULT_REGISTRY, DatabaseCluster, InvalidSpec};

/// What clinics may ask for. Read from YAML (camelCase keys); unknown keys are refused, so a
/// misspelt rule never silently allows everything.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Policy {
    /// Namespaces a clinic may name in `spec.backup.veleroNamespace`.
    pub velero_namespaces: Vec<String>,
    /// Velero BackupStorageLocations a clinic may name in `spec.backup.storageLocation`. Leaving
    /// the field unset (Velero's default location) is always allowed.
    pub backup_storage_locations: Vec<String>,
    /// Namespaces a clinic's dashboard may go to besides its own
    /// (`spec.monitoring.dashboard.namespace`).
    pub dashboard_namespaces: Vec<String>,
    /// Namespaces a clinic may open its metrics ports to (`spec.monitoring.prometheusNamespace`).
    pub prometheus_namespaces: Vec<String>,
    /// PriorityClasses a clinic's pods may run with (`placement.priorityClassName` of each
    /// component). None by default: a tenant's high priority would evict other tenants' pods.
    pub priority_classes: Vec<String>,
    /// Namespaces whose Elasticsearch a clustered backend may search through
    /// (`spec.openmrs.backend.clustering.elasticsearchUris` naming a Service there); its
    /// NetworkPolicy then lets the backend reach that namespace on the URI's port. The clinic's
    /// own namespace needs no permission. None by default: an Elasticsearch shared by clinics
    /// holds their indexes side by side.
    pub search_namespaces: Vec<String>,
    /// The namespace the mariadb-operator runs in, for clinics that ask for a replicated
    /// database (`spec.database.highAvailability`): their MariaDB pods admit its controller on
    /// MariaDB's and its agents' ports. None by default: such a clinic is then refused, since
    /// only the platform team knows whether that operator runs and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_operator_namespace: Option<String>,
    /// Namespaces a clinic may open its gateway to (`spec.ingress.controllerNamespace`).
    pub ingress_controller_namespaces: Vec<String>,
    /// ClusterIssuers a clinic may name in `spec.ingress.tls.issuerRef`,
    /// `spec.database.tls.issuerRef` and `spec.openmrs.backend.tls.issuerRef`. An `Issuer`
    /// lives in the clinic's own namespace and is always allowed.
    pub cluster_issuers: Vec<String>,
    /// Host names a clinic may serve (`spec.ingress.host`, `spec.route.host`): exact names, or
    /// `*.example.fr` for every name under that domain.
    pub ingress_hosts: Vec<String>,
    /// Gateways (Gateway API) a clinic may attach its HTTPRoute to (`spec.route`), with what the
    /// operator needs to know of each. None by default: the platform team names its own.
    pub gateways: Vec<AllowedGateway>,
    /// Registries images may come from (`spec.images.registry` and every component `image`):
    /// a host with an optional path (`registry.example.fr/mirror`), matched on whole segments.
    /// The default images come from `docker.io`.
    pub registries: Vec<String>,
    /// Regions approved for patient data (node label `topology.kubernetes.io/region`). When the
    /// list is not empty, `spec.residency.regions` must be among them. Residency counts towards
    /// `Compliant` only when every region and zone a clinic names is approved here.
    pub residency_regions: Vec<String>,
    /// Zones approved for patient data (node label `topology.kubernetes.io/zone`), as above.
    pub residency_zones: Vec<String>,
    /// StorageClasses the platform team attests encrypt at rest, besides those recognised from
    /// their parameters. A clinic's own `spec.security.storageEncrypted` is not evidence.
    pub encrypting_storage_classes: Vec<String>,
    /// Networks `spec.security.extraEgress` must not overlap, e.g. the cluster's pod, Service
    /// and node ranges, so that extra egress never reaches other tenants.
    pub denied_egress_cidrs: Vec<String>,
    /// Let a clinic turn the Pod Security labels off (`spec.security.enforcePodSecurity:
    /// false`). Even then the operator never removes labels: it only stops adding them.
    pub allow_pod_security_opt_out: bool,
    /// How long the Velero backups of a clinic deleted under a confirmed `deletionPolicy: Delete`
    /// with `spec.backup.deleteWithClinic` live on before they expire (a Go-style duration,
    /// default `168h`): the window in which a deletion by mistake can still be undone.
    pub backup_deletion_delay: String,
    /// Where clinics that turn traces on (`spec.tracing.enabled`) send them, and how the
    /// OpenTelemetry Java agent gets into their backend. None by default: a clinic asking for
    /// traces is then refused, since a trace carries the paths and timings of patient records
    /// and only the platform team says where they may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingPolicy>,
    /// TLS at the Ingress controller in front of the clinics (`spec.ingress`), as the platform
    /// runs it: the cipher suites of each clinic's server and the TLS options of its router.
    pub ingress_tls: IngressTlsPolicy,
    /// Where the alerts of every monitored clinic go, by severity (an `AlertmanagerConfig` per
    /// clinic, for the Prometheus Operator's Alertmanager). None by default: the clinics'
    /// alerts then follow the Alertmanager's own routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_routing: Option<AlertRouting>,
    /// The service mesh clinics that set `spec.security.mtls` join. None by default: a clinic
    /// asking for mutual TLS is then refused, since only the platform team knows whether a mesh
    /// runs and how its edge and Prometheus reach the clinics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshPolicy>,
    /// The operator's own probe of every clinic through its gateway, as users reach it. None by
    /// default: the operator must reach the clinics' Services (it does when it runs in the
    /// cluster), and a clinic whose pods are simulated would never answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clinic_probe: Option<ClinicProbePolicy>,
    /// Any Gateway a route names is taken as listed (with an `https` listener), and a route
    /// naming none gets a stand-in one: only [`Policy::unrestricted`] sets it, never a file.
    #[serde(skip)]
    pub any_gateway: bool,
}

impl Default for Policy {
    fn default() -> Self {
        let one = |s: &str| vec![s.to_string()];
        Self {
            velero_namespaces: one("velero"),
            backup_storage_locations: Vec::new(),
            dashboard_namespaces: one("monitoring"),
            prometheus_namespaces: one("monitoring"),
            search_namespaces: Vec::new(),
            priority_classes: Vec::new(),
            database_operator_namespace: None,
            ingress_controller_namespaces: one("ingress-nginx"),
            cluster_issuers: one("*"),
            ingress_hosts: one("*"),
            gateways: Vec::new(),
            registries: one("*"),
            residency_regions: Vec::new(),
            residency_zones: Vec::new(),
            encrypting_storage_classes: Vec::new(),
            denied_egress_cidrs: Vec::new(),
            allow_pod_security_opt_out: false,
            backup_deletion_delay: "168h".into(),
            tracing: None,
            ingress_tls: IngressTlsPolicy::default(),
            alert_routing: None,
            mesh: None,
            clinic_probe: None,
            any_gateway: false,
        }
    }
}

impl Policy {
    /// [`Policy::backup_deletion_delay`] as a duration (checked when the policy is read).
    pub fn backup_deletion_delay(&self) -> std::time::Duration {
        humantime::parse_duration(&self.backup_deletion_delay)
            .unwrap_or(std::time::Duration::from_secs(7 * 24 * 3600))
    }

    /// Allows everything the CRD's schema allows: the API server's own verdict, for comparing
    /// `render` with `--dry-run=server`, which knows no platform policy.
    pub fn unrestricted() -> Self {
        let any = || vec!["*".to_string()];
        Self {
            velero_namespaces: any(),
            backup_storage_locations: any(),
            dashboard_namespaces: any(),
            prometheus_namespaces: any(),
            search_namespaces: any(),
            priority_classes: any(),
            ingress_controller_namespaces: any(),
            cluster_issuers: any(),
            ingress_hosts: any(),
            registries: any(),
            residency_regions: any(),
            residency_zones: any(),
            allow_pod_security_opt_out: true,
            any_gateway: true,
            tracing: Some(TracingPolicy {
                collector: OtlpCollector {
                    namespace: "observability".into(),
                    service: "otel-collector".into(),
                    port: OTLP_HTTP_PORT,
                    protocol: OtlpProtocol::HttpProtobuf,
                    pod_labels: std::collections::BTreeMap::new(),
                },
                java_agent: JavaAgent {
                    instrumentation: Some("observability/java".into()),
                    ..Default::default()
                },
            }),
            mesh: Some(MeshPolicy::default()),
            database_operator_namespace: Some(DEFAULT_DATABASE_OPERATOR_NAMESPACE.into()),
            ..Self::default()
        }
    }
}

/// Where the mariadb-operator's chart is installed in its own documentation.
pub const DEFAULT_DATABASE_OPERATOR_NAMESPACE: &str = "mariadb-operator";

/// A Gateway clinics may attach to, as the platform team runs it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedGateway {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
    /// The HTTPS listener (`sectionName`) a clinic's route attaches to: the platform team
    /// attests that it terminates TLS (it counts as `tlsAtEdge`).
    pub listener: String,
    /// A plain-HTTP listener on which the clinic's host is redirected to HTTPS (a second
    /// HTTPRoute, `<name>-redirect`); none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_listener: Option<String>,
    /// Namespace of the pods that carry the Gateway's traffic (its data plane): the only pods
    /// that may reach the clinic's gateway. The Gateway's namespace when unset (Istio, Traefik);
    /// e.g. `envoy-gateway-system` for Envoy Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_namespace: Option<String>,
    /// The Gateway of clinics that name none (at most one is the default).
    #[serde(default)]
    pub default: bool,
    /// Which implementation's request metrics the clinic's error-rate and latency alerts and
    /// its requests panel read; none when unset (those alerts are then not rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<GatewayMetrics>,
}

/// Gateway implementations whose per-backend request metrics the operator knows.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GatewayMetrics {
    /// Traefik's `traefik_service_requests_total` and `traefik_service_request_duration_seconds`
    /// (`--metrics.prometheus`), by backend Service.
    Traefik,
}

impl AllowedGateway {
    /// Where the Gateway's proxies run.
    pub fn proxy_namespace(&self) -> &str {
        self.proxy_namespace.as_deref().unwrap_or(&self.namespace)
    }

    fn shown(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The TLS 1.2 cipher suites a clinic's Ingress accepts by default: ECDHE key exchange and
/// AEAD only (forward secrecy; no CBC, RSA key exchange or SHA-1), in OpenSSL's names, the
/// order ingress-nginx prefers them. TLS 1.3's suites are all AEAD and the controller's own.
pub const STRONG_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// TLS at the Ingress controller: what each controller lets an Ingress set. The minimum
/// protocol version is the controller's own setting (docs/security.md#tls).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressTlsPolicy {
    /// ingress-nginx: the `ssl-ciphers` of each clinic's server (OpenSSL names, `:`-separated),
    /// served in this order (`ssl-prefer-server-ciphers`). Default [`STRONG_TLS12_CIPHERS`].
    pub nginx_ciphers: String,
    /// Traefik: the TLSOption each clinic's router uses, as Traefik names it
    /// (`<namespace>-<name>@kubernetescrd`), where the platform sets `minVersion` and the cipher
    /// suites. Unset: Traefik's default TLS options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traefik_tls_options: Option<String>,
}

impl Default for IngressTlsPolicy {
    fn default() -> Self {
        Self { nginx_ciphers: STRONG_TLS12_CIPHERS.into(), traefik_tls_options: None }
    }
}

/// Where clinics' alerts go: the platform's receivers, one per severity. Webhooks, the one
/// integration every paging and ticketing system takes (directly or through a relay).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRouting {
    /// The webhook of the on-call pager: `critical` alerts, repeated every hour while firing.
    pub critical_webhook: String,
    /// The webhook of the ticket queue: `warning` alerts (and any other), every 4 hours.
    pub warning_webhook: String,
}

/// The service mesh of the platform, as the platform team runs it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshPolicy {
    /// Which mesh: `istioAmbient` (Istio in ambient mode, the only one known). Ambient needs no
    /// sidecar nor `NET_ADMIN` init container, so the pods stay within Pod Security
    /// `restricted`.
    pub provider: MeshProvider,
    /// The Ingress controllers and Gateway proxies that reach clinics are in the mesh: the
    /// gateway's port is then STRICT and admits only their namespaces' identities. Default
    /// false: that one port is PERMISSIVE (plain traffic from the edge), still held to the
    /// edge's namespaces by the NetworkPolicy.
    pub edge_in_mesh: bool,
    /// Prometheus is in the mesh: the exporters' ports are then STRICT and admit only its
    /// namespace's identities. Default false: they are PERMISSIVE, held to Prometheus'
    /// namespace by the NetworkPolicy.
    pub prometheus_in_mesh: bool,
}

/// How the operator probes each clinic: the login page and one authenticated REST call through
/// the clinic's gateway Service, as a user's browser would.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClinicProbePolicy {
    /// The operator's namespace: each gateway's NetworkPolicy admits the probe from it, and
    /// from nowhere else beyond the clinic's edge.
    pub operator_namespace: String,
    /// Seconds between two probes of a clinic (5 to 600; default 30).
    pub interval_seconds: u64,
    /// Seconds both requests of a probe may take together (1 to 30; default 3, the brief's
    /// objective per action): slower counts as not answering.
    pub timeout_seconds: u64,
    /// Failed probes in a row before `OpenMRSReady` turns False (1 to 10; default 2), so that
    /// one lost request does not page anyone.
    pub failures_before_down: u32,
}

impl Default for ClinicProbePolicy {
    fn default() -> Self {
        Self {
            operator_namespace: "clinic-operator".into(),
            interval_seconds: 30,
            timeout_seconds: 3,
            failures_before_down: 2,
        }
    }
}

/// Service meshes the operator knows.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum MeshProvider {
    /// Istio in ambient mode (ztunnel on each node): pods join with the label
    /// `istio.io/dataplane-mode: ambient`; policies are `security.istio.io/v1`.
    #[default]
    IstioAmbient,
}

/// Where traces go and how the Java agent reaches the backend.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingPolicy {
    /// The OTLP collector the backends export to; their NetworkPolicy opens exactly that flow.
    pub collector: OtlpCollector,
    /// How the OpenTelemetry Java agent gets into the backend.
    pub java_agent: JavaAgent,
}

/// The default OTLP port over HTTP (gRPC's is 4317).
pub const OTLP_HTTP_PORT: u16 = 4318;

/// An OpenTelemetry collector's OTLP receiver, as the platform team runs it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpCollector {
    /// Namespace of the collector's Service.
    pub namespace: String,
    /// Name of the collector's Service.
    pub service: String,
    /// Port of its OTLP receiver (default 4318, OTLP over HTTP).
    #[serde(default = "otlp_http_port")]
    pub port: u16,
    /// `http/protobuf` (default) or `grpc`, as the Java agent names them.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Labels of the collector's pods: the backend may reach only those pods on `port`. Every
    /// pod of `namespace` when unset.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pod_labels: std::collections::BTreeMap<String, String>,
}

fn otlp_http_port() -> u16 {
    OTLP_HTTP_PORT
}

impl OtlpCollector {
    /// The endpoint the agent exports to (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}.{}.svc:{}", self.service, self.namespace, self.port)
    }
}

/// OTLP transports.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// Exactly one of `instrumentation` (the OpenTelemetry Operator injects the agent) or `image`
/// (an init container copies the agent's jar from that image), checked when the policy is read.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JavaAgent {
    /// `namespace/name` of the OpenTelemetry Operator's `Instrumentation` that injects the
    /// agent (the pod annotation `instrumentation.opentelemetry.io/inject-java`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrumentation: Option<String>,
    /// An image holding the agent's jar and a `cp` (such as the OpenTelemetry Operator's
    /// `autoinstrumentation-java`): an init container copies the jar into the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Path of the jar in `image` (default `/javaagent.jar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl JavaAgent {
    /// Path of the jar in the agent image.
    pub fn jar_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/javaagent.jar")
    }
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the policy file {path} is not a valid policy: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("the policy file {path}: deniedEgressCidrs[{index}] is not a CIDR ({value:?})")]
    Cidr { path: String, index: usize, value: String },
    #[error("the policy file {path}: backupDeletionDelay must be a duration such as 168h ({value:?})")]
    Duration { path: String, value: String },
    #[error("the policy file {path}: gateways lists more than one default ({first} and {second})")]
    DefaultGateways { path: String, first: String, second: String },
    #[error(
        "the policy file {path}: tracing.javaAgent needs exactly one of instrumentation (namespace/name) or image"
    )]
    JavaAgent { path: String },
    #[error("the policy file {path}: clinicProbe.{field} must be {range} ({value})")]
    ClinicProbe { path: String, field: &'static str, range: &'static str, value: String },
    #[error("the policy file {path}: alertRouting.{field} {value:?} is not an http(s) URL")]
    Webhook { path: String, field: &'static str, value: String },
    #[error(
        "the policy file {path}: ingressTls.{field} {value:?} is not a cipher list (OpenSSL names separated by ':') or a Traefik TLSOption reference (<namespace>-<name>@kubernetescrd)"
    )]
    IngressTls { path: String, field: &'static str, value: String },
}

impl Policy {
    /// Reads a policy file (YAML); an empty file is the default policy.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: shown.clone(), source })?;
        Self::from_yaml(&text, &shown)
    }

    /// Parses a policy, or the chart's values file whose `policy` key holds it (so one file
    /// serves `helm install -f` and `render --policy`); `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let parse_error = |source| PolicyError::Parse { path: origin.into(), source };
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(parse_error)?;
        let value = match value {
            serde_yaml::Value::Mapping(mut values) if values.contains_key("policy") => {
                values.remove("policy").unwrap_or_default()
            }
            other => other,
        };
        let policy: Policy = if value.is_null() {
            Policy::default()
        } else {
            serde_yaml::from_value(value).map_err(parse_error)?
        };
        if humantime::parse_duration(&policy.backup_deletion_delay).is_err() {
            return Err(PolicyError::Duration { path: origin.into(), value: policy.backup_deletion_delay });
        }
        let mut defaults = policy.gateways.iter().filter(|g| g.default);
        if let (Some(first), Some(second)) = (defaults.next(), defaults.next()) {
            return Err(PolicyError::DefaultGateways {
                path: origin.into(),
                first: first.shown(),
                second: second.shown(),
            });
        }
        if let Some(tracing) = &policy.tracing {
            let agent = &tracing.java_agent;
            let instrumentation_ok = agent
                .instrumentation
                .as_deref()
                .is_some_and(|n| n.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()));
            let valid = match (&agent.instrumentation, &agent.image) {
                (Some(_), None) => instrumentation_ok && agent.path.is_none(),
                (None, Some(image)) => !image.is_empty(),
                _ => false,
            };
            if !valid {
                return Err(PolicyError::JavaAgent { path: origin.into() });
            }
        }
        // Both end up in the controller's configuration: nothing but their own syntax.
        let ciphers = &policy.ingress_tls.nginx_ciphers;
        if ciphers.is_empty() || !ciphers.chars().all(|c| c.is_ascii_alphanumeric() || ":+!-_.@=".contains(c))
        {
            return Err(PolicyError::IngressTls {
                path: origin.into(),
                field: "nginxCiphers",
                value: ciphers.clone(),
            });
        }
        if let Some(options) = &policy.ingress_tls.traefik_tls_options {
            let valid = options.split_once('@').is_some_and(|(name, provider)| {
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && !provider.is_empty()
                    && provider.chars().all(|c| c.is_ascii_lowercase())
            });
            if !valid {
                return Err(PolicyError::IngressTls {
                    path: origin.into(),
                    field: "traefikTlsOptions",
                    value: options.clone(),
                });
            }
        }
        if let Some(routing) = &policy.alert_routing {
            for (field, url) in
                [("criticalWebhook", &routing.critical_webhook), ("warningWebhook", &routing.warning_webhook)]
            {
                // It ends up in the Alertmanager's configuration: a URL and nothing else.
                let valid = (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() <= 2048
                    && url.chars().all(|c| c.is_ascii_graphic() && !"\"'`\\{}<>".contains(c));
                if !valid {
                    return Err(PolicyError::Webhook { path: origin.into(), field, value: url.clone() });
                }
            }
        }
        if let Some(probe) = &policy.clinic_probe {
            let invalid = |field, range, value: String| PolicyError::ClinicProbe {
                path: origin.into(),
                field,
                range,
                value,
            };
            if !(5..=600).contains(&probe.interval_seconds) {
                return Err(invalid("intervalSeconds", "5 to 600", probe.interval_seconds.to_string()));
            }
            if !(1..=30).contains(&probe.timeout_seconds) {
                return Err(invalid("timeoutSeconds", "1 to 30", probe.timeout_seconds.to_string()));
            }
            if !(1..=10).contains(&probe.failures_before_down) {
                return Err(invalid("failuresBeforeDown", "1 to 10", probe.failures_before_down.to_string()));
            }
            if !is_dns_label(&probe.operator_namespace) {
                return Err(invalid(
                    "operatorNamespace",
                    "a namespace name",
                    probe.operator_namespace.clone(),
                ));
            }
        }
        for (index, value) in policy.denied_egress_cidrs.iter().enumerate() {
            if value.parse::<IpNet>().is_err() {
                return Err(PolicyError::Cidr { path: origin.into(), index, value: value.clone() });
            }
        }
        Ok(policy)
    }

    /// Admits a clinic under the policy: refuses the first field of its spec that points
    /// outside it, and resolves what the policy decides for it (the Gateway its route attaches
    /// to, as the platform team runs it).
    pub fn admit(&self, mut clinic: Clinic) -> Result<Clinic, InvalidSpec> {
        if let Some(refused) = self.requests(&clinic).into_iter().find(|r| !r.allowed()) {
            return Err(InvalidSpec {
                field: refused.field,
                message: format!(
                    "{:?} (its {}: {}); pick one of those or ask the platform team",
                    refused.shown,
                    refused.list,
                    listed(refused.allowed)
                ),
            });
        }
        self.check_extra_egress(&clinic.spec)?;
        if !clinic.spec.security.enforce_pod_security && !self.allow_pod_security_opt_out {
            return Err(InvalidSpec {
                field: "spec.security.enforcePodSecurity".into(),
                message: "false (its allowPodSecurityOptOut is false): the namespace stays on Pod Security restricted; remove the field".into(),
            });
        }
        clinic.gateway = match &clinic.spec.route {
            Some(route) => Some(self.gateway_for(route)?),
            None => None,
        };
        clinic.ingress_tls = self.ingress_tls.clone();
        clinic.alert_routing = self.alert_routing.clone();
        clinic.probe = self.clinic_probe.clone();
        clinic.mesh = match (clinic.spec.security.mtls, &self.mesh) {
            (false, _) => None,
            (true, Some(mesh)) => Some(mesh.clone()),
            (true, None) => {
                return Err(InvalidSpec {
                    field: "spec.security.mtls".into(),
                    message: "true (its mesh: none): the platform runs no service mesh for clinics; remove the field or ask the platform team".into(),
                });
            }
        };
        clinic.database_cluster = match (
            &clinic.spec.database.high_availability,
            &self.database_operator_namespace,
        ) {
            (None, _) => None,
            (Some(ha), Some(namespace)) => {
                Some(DatabaseCluster { replicas: ha.replicas, operator_namespace: namespace.clone() })
            }
            (Some(_), None) => {
                return Err(InvalidSpec {
                    field: "spec.database.highAvailability".into(),
                    message: "set (its databaseOperatorNamespace: none): the platform runs no mariadb-operator for clinics; remove the field or ask the platform team".into(),
                });
            }
        };
        clinic.tracing = match (clinic.spec.tracing.enabled, &self.tracing) {
            (false, _) => None,
            (true, Some(tracing)) => Some(tracing.clone()),
            (true, None) => {
                return Err(InvalidSpec {
                    field: "spec.tracing.enabled".into(),
                    message: "true (its tracing: none): the platform names no trace collector; remove the field or ask the platform team".into(),
                });
            }
        };
        Ok(clinic)
    }

    /// The listed Gateway a route names, or the default one.
    fn gateway_for(&self, route: &RouteSpec) -> Result<AllowedGateway, InvalidSpec> {
        let listed = || {
            let names: Vec<String> = self.gateways.iter().map(AllowedGateway::shown).collect();
            listed(&names)
        };
        let any = |namespace: &str, name: &str| AllowedGateway {
            namespace: namespace.into(),
            name: name.into(),
            listener: "https".into(),
            redirect_listener: None,
            proxy_namespace: None,
            default: false,
            metrics: None,
        };
        match &route.gateway {
            Some(wanted) => self
                .gateways
                .iter()
                .find(|g| g.name == wanted.name && g.namespace == wanted.namespace)
                .cloned()
                .or_else(|| self.any_gateway.then(|| any(&wanted.namespace, &wanted.name)))
                .ok_or_else(|| InvalidSpec {
                    field: "spec.route.gateway".into(),
                    message: format!(
                        "\"{}/{}\" (its gateways: {}); pick one of those or ask the platform team",
                        wanted.namespace,
                        wanted.name,
                        listed()
                    ),
                }),
            None => self
                .gateways
                .iter()
                .find(|g| g.default)
                .cloned()
                .or_else(|| self.any_gateway.then(|| any("gateway-system", "gateway")))
                .ok_or_else(|| InvalidSpec {
                    field: "spec.route.gateway".into(),
                    message: format!(
                        "is required: the platform's policy names no default Gateway (its gateways: {})",
                        listed()
                    ),
                }),
        }
    }

    /// Every value of the spec that must be on one of the policy's lists, in the order they are
    /// judged (the first refused is reported).
    fn requests<'a>(&'a self, clinic: &'a Clinic) -> Vec<Request<'a>> {
        let spec = &clinic.spec;
        let mut requests = vec![Request::named(
            "spec.backup.veleroNamespace",
            &spec.backup.velero_namespace,
            &self.velero_namespaces,
            "veleroNamespaces",
        )];
        if let Some(location) = &spec.backup.storage_location {
            requests.push(Request::named(
                "spec.backup.storageLocation",
                location,
                &self.backup_storage_locations,
                "backupStorageLocations",
            ));
        }
        // The clinic's own namespace needs no permission.
        if let Some(namespace) =
            spec.monitoring.dashboard.namespace.as_ref().filter(|ns| **ns != clinic.namespace)
        {
            requests.push(Request::named(
                "spec.monitoring.dashboard.namespace",
                namespace,
                &self.dashboard_namespaces,
                "dashboardNamespaces",
            ));
        }
        requests.push(Request::named(
            "spec.monitoring.prometheusNamespace",
            &spec.monitoring.prometheus_namespace,
            &self.prometheus_namespaces,
            "prometheusNamespaces",
        ));
        let openmrs = &spec.openmrs;
        for (field, placement) in [
            ("spec.openmrs.backend.placement.priorityClassName", &openmrs.backend.placement),
            ("spec.openmrs.frontend.placement.priorityClassName", &openmrs.frontend.placement),
            ("spec.openmrs.gateway.placement.priorityClassName", &openmrs.gateway.placement),
            ("spec.database.placement.priorityClassName", &spec.database.placement),
        ] {
            if let Some(class) = &placement.priority_class_name {
                requests.push(Request::named(field, class, &self.priority_classes, "priorityClasses"));
            }
        }
        for (namespace, _) in clinic.search_services().into_iter().filter(|(ns, _)| *ns != clinic.namespace) {
            requests.push(Request::named(
                "spec.openmrs.backend.clustering.elasticsearchUris",
                &namespace,
                &self.search_namespaces,
                "searchNamespaces",
            ));
        }
        if let Some(route) = &spec.route {
            requests.push(Request {
                matches: host_matches,
                ..Request::named("spec.route.host", &route.host, &self.ingress_hosts, "ingressHosts")
            });
        }
        if let Some(ingress) = &spec.ingress {
            requests.push(Request::named(
                "spec.ingress.controllerNamespace",
                &ingress.controller_namespace,
                &self.ingress_controller_namespaces,
                "ingressControllerNamespaces",
            ));
            requests.push(Request {
                matches: host_matches,
                ..Request::named("spec.ingress.host", &ingress.host, &self.ingress_hosts, "ingressHosts")
            });
            // An Issuer lives in the clinic's own namespace: only ClusterIssuers are listed.
            if let Some(issuer) =
                ingress.tls.issuer_ref.as_ref().filter(|i| i.kind == IssuerKind::ClusterIssuer)
            {
                requests.push(Request::named(
                    "spec.ingress.tls.issuerRef.name",
                    &issuer.name,
                    &self.cluster_issuers,
                    "clusterIssuers",
                ));
            }
        }
        let backend_tls = &spec.openmrs.backend.tls;
        for (field, enabled, issuer) in [
            ("spec.database.tls.issuerRef.name", spec.database.tls.enabled, &spec.database.tls.issuer_ref),
            ("spec.openmrs.backend.tls.issuerRef.name", backend_tls.enabled, &backend_tls.issuer_ref),
        ] {
            if let Some(issuer) = issuer.as_ref().filter(|i| enabled && i.kind == IssuerKind::ClusterIssuer) {
                requests.push(Request::named(field, &issuer.name, &self.cluster_issuers, "clusterIssuers"));
            }
        }
        for (field, shown, image) in images(spec) {
            requests.push(Request {
                field: field.into(),
                shown,
                matched: image,
                allowed: &self.registries,
                list: "registries",
                matches: from_registry,
            });
        }
        // An empty residency list means the platform team approves no region in particular:
        // nothing is refused (and residency does not count towards `Compliant`).
        if let Some(residency) = &spec.residency {
            let lists = [
                ("regions", &residency.regions, &self.residency_regions, "residencyRegions"),
                ("zones", &residency.zones, &self.residency_zones, "residencyZones"),
            ];
            for (key, wanted, allowed, list) in
                lists.into_iter().filter(|(_, _, allowed, _)| !allowed.is_empty())
            {
                for (i, value) in wanted.iter().enumerate() {
                    let field = format!("spec.residency.{key}[{i}]");
                    requests.push(Request { field, ..Request::named("", value, allowed, list) });
                }
            }
        }
        requests
    }

    /// Refuses extra egress into the networks the platform team denies (the cluster's own).
    fn check_extra_egress(&self, spec: &ClinicPlatformSpec) -> Result<(), InvalidSpec> {
        let denied: Vec<IpNet> = self.denied_egress_cidrs.iter().filter_map(|d| d.parse().ok()).collect();
        for (i, rule) in spec.security.extra_egress.iter().enumerate() {
            let Ok(wanted) = rule.cidr.parse::<IpNet>() else { continue };
            if let Some(denied) = denied.iter().find(|denied| overlaps(&wanted, denied)) {
                return Err(InvalidSpec {
                    field: format!("spec.security.extraEgress[{i}].cidr"),
                    message: format!(
                        "{:?}, which overlaps {denied} of its deniedEgressCidrs (the cluster's own networks)",
                        rule.cidr
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether the clinic's residency is one the platform approved: every region and zone it
    /// names is on the policy's lists (and it names at least one).
    pub fn residency_approved(&self, spec: &ClinicPlatformSpec) -> bool {
        let Some(residency) = &spec.residency else { return false };
        let approved = |wanted: &[String], approved: &[String]| {
            wanted.iter().all(|w| approved.iter().any(|a| a == w || a == "*"))
        };
        (!residency.regions.is_empty() || !residency.zones.is_empty())
            && approved(&residency.regions, &self.residency_regions)
            && approved(&residency.zones, &self.residency_zones)
    }

    /// Whether the platform team attests that this StorageClass encrypts at rest.
    pub fn attests_encryption(&self, storage_class: &str) -> bool {
        self.encrypting_storage_classes.iter().any(|c| c == storage_class)
    }
}

/// One value a clinic asks for, and the policy list it must match.
struct Request<'a> {
    /// The spec field that holds it, as `kubectl explain` spells it.
    field: String,
    /// The value as the user wrote it.
    shown: String,
    /// The value as it is matched (an image's reference, say).
    matched: String,
    allowed: &'a [String],
    /// The list's key in the policy file.
    list: &'static str,
    /// Whether one entry of the list (first argument) allows the value.
    matches: fn(&str, &str) -> bool,
}

impl<'a> Request<'a> {
    /// A value matched by name (`*` allows any).
    fn named(field: &str, value: &str, allowed: &'a [String], list: &'static str) -> Self {
        Request {
            field: field.into(),
            shown: value.into(),
            matched: value.into(),
            allowed,
            list,
            matches: |allowed, value| allowed == "*" || allowed == value,
        }
    }

    fn allowed(&self) -> bool {
        self.allowed.iter().any(|entry| (self.matches)(entry, &self.matched))
    }
}

fn listed(allowed: &[String]) -> String {
    if allowed.is_empty() { "none".into() } else { allowed.join(", ") }
}

/// `*` any host; `*.example.fr` any name under `example.fr`; else the exact name.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        _ if pattern == "*" => true,
        Some(domain) => host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern == host,
    }
}

/// Whether the image reference comes from the registry (host and optional path), on whole
/// segments: `registry.example.fr/mirror` allows `registry.example.fr/mirror/openmrs/x:1` but
/// neither `registry.example.fr/mirror2/x` nor `registry.example.fr.evil.io/x`.
fn from_registry(allowed: &str, image: &str) -> bool {
    allowed == "*" || image.strip_prefix(allowed).is_some_and(|rest| rest.starts_with('/'))
}

/// Every image the clinic would run, as (field that decides it, value shown, reference
/// matched): the registry mirror once for all default images, and each override.
fn images(spec: &ClinicPlatformSpec) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let overrides = [
        ("spec.openmrs.backend.image", &spec.openmrs.backend.image),
        ("spec.openmrs.frontend.image", &spec.openmrs.frontend.image),
        ("spec.openmrs.gateway.image", &spec.openmrs.gateway.image),
        ("spec.database.image", &spec.database.image),
    ];
    // The exporters always use the default images, so the registry always matters.
    let registry = spec.images.registry.clone().unwrap_or_else(|| DEFAULT_REGISTRY.into());
    out.push(("spec.images.registry", registry.clone(), format!("{registry}/")));
    for (field, image) in overrides {
        if let Some(image) = image {
            out.push((field, image.clone(), image.clone()));
        }
    }
    out
}

/// Whether two networks share any address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
