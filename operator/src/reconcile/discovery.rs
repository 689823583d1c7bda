//! Which optional APIs the cluster serves (Velero, cert-manager, Gateway API, Istio, the
//! Prometheus Operator and its AlertmanagerConfig, the Vertical Pod Autoscaler, the
//! mariadb-operator), asked through discovery and trusted for
//! [`DISCOVERY_TTL`]: CRDs installed after the operator started are picked up without a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::Client;
use tracing::{debug, info};

use super::error::{Error, Result};
use crate::desired::OptionalApi;

/// How long a discovery answer about an optional API is trusted.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(30);

const VELERO: (&str, &[&str]) = ("velero.io/v1", &["schedules", "backups"]);
const CERT_MANAGER: (&str, &[&str]) = ("cert-manager.io/v1", &["certificates"]);
const GATEWAY_API: (&str, &[&str]) = ("gateway.networking.k8s.io/v1", &["httproutes"]);
const ISTIO_SECURITY: (&str, &[&str]) =
    ("security.istio.io/v1", &["peerauthentications", "authorizationpolicies"]);
const VERTICAL_POD_AUTOSCALER: (&str, &[&str]) = ("autoscaling.k8s.io/v1", &["verticalpodautoscalers"]);
const ALERTMANAGER_CONFIG: (&str, &[&str]) = ("monitoring.coreos.com/v1alpha1", &["alertmanagerconfigs"]);
const MARIADB_OPERATOR: (&str, &[&str]) = ("k8s.mariadb.com/v1alpha1", &["mariadbs"]);
const PROMETHEUS_OPERATOR: (&str, &[&str]) =
    ("monitoring.coreos.com/v1", &["servicemonitors", "prometheusrules"]);

/// The last answers of discovery, and when they were asked.
pub struct Discovery {
    client: Client,
    answers: tokio::sync::Mutex<HashMap<&'static str, (bool, Instant)>>,
}

impl Discovery {
    pub fn new(client: Client) -> Self {
        Self { client, answers: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// Whether Velero's Schedules and Backups are served.
    pub async fn velero(&self) -> bool {
        self.served(VELERO).await
    }

    /// Whether Velero's API is served, or why discovery could not tell: at deletion "could
    /// not tell" must not read as "absent", or the finalizer would go and leave a Schedule
    /// backing up the clinic's data.
    pub async fn velero_or_error(&self) -> Result<bool> {
        self.served_or_error(VELERO).await
    }

    /// Whether the API of an optional child family is served.
    pub async fn optional(&self, api: OptionalApi) -> bool {
        match api {
            OptionalApi::CertManager => self.served(CERT_MANAGER).await,
            OptionalApi::GatewayApi => self.served(GATEWAY_API).await,
            OptionalApi::Istio => self.served(ISTIO_SECURITY).await,
            OptionalApi::VerticalPodAutoscaler => self.served(VERTICAL_POD_AUTOSCALER).await,
            OptionalApi::AlertmanagerConfig => self.served(ALERTMANAGER_CONFIG).await,
            OptionalApi::PrometheusOperator => self.served(PROMETHEUS_OPERATOR).await,
            OptionalApi::DatabaseOperator => self.served(MARIADB_OPERATOR).await,
        }
    }

    /// A discovery failure reads as "absent for now" (asked again after the TTL).
    async fn served(&self, api: (&'static str, &[&str])) -> bool {
        match self.served_or_error(api).await {
            Ok(served) => served,
            Err(e) => {
                debug!(error = %e, group_version = api.0, "discovery failed; treating the API as absent for now");
                false
            }
        }
    }

    /// Whether `group_version` serves all of `resources`; an error is not remembered.
    async fn served_or_error(&self, (group_version, resources): (&'static str, &[&str])) -> Result<bool> {
        let mut answers = self.answers.lock().await;
        if let Some((served, at)) = answers.get(group_version)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(*served);
        }
        let served = match self.client.list_api_group_resources(group_version).await {
            Ok(list) => resources.iter().all(|r| list.resources.iter().any(|x| x.name == *r)),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(source) => {
                return Err(Error::Read { what: format!("the {group_version} API (discovery)"), source });
            }
        };
        if answers.get(group_version).map(|(was, _)| *was) != Some(served) {
            info!(group_version, served, "discovery");
        }
        answers.insert(group_version, (served, Instant::now()));
        Ok(served)
    }
}
