//! The operator sees what users see (the policy's `clinicProbe`): every interval, each clinic is
//! asked for its login page and one authenticated REST call through its gateway Service, as a
//! browser would, within the policy's timeout. Pods can be Ready while the application does not
//! answer (a wedged proxy, a broken route, a database the backend lost): after
//! `failuresBeforeDown` failed probes in a row `OpenMRSReady` says `NotAnswering`, whatever the
//! pods say, and a reconcile is asked for whenever the verdict changes. The metrics carry each
//! probe's outcome and time for the availability objectives.
//!
//! The probe reaches the gateway Service by its cluster IP (read once per Service: it never
//! changes), so it needs no cluster DNS; it logs in as the clinic's `admin`, whose password it
//! reads from the clinic's Secret and keeps in memory only, never in a log or the status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, info, warn};

use super::caches::Marker;
use super::context::Context;
use crate::api::ClinicPlatform;
use crate::model::Clinic;
use crate::policy::ClinicProbePolicy;

type ClinicKey = (String, String);

/// Probes of different clinics running at once.
const CONCURRENCY: usize = 16;
/// How long a read admin password is used before it is read again (it may be rotated).
const CREDENTIALS_TTL: Duration = Duration::from_secs(600);
/// The login page: the frontend's, through the gateway.
pub const LOGIN_PATH: &str = "/openmrs/spa/login";
/// The authenticated REST call: the session, which needs the database.
pub const REST_PATH: &str = "/openmrs/ws/rest/v1/session";

/// Why a probe failed; bounded, so it is a metric label and a condition's word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("the gateway Service has no cluster IP")]
    NoGatewayAddress,
    #[error("the admin password could not be read")]
    NoCredentials,
    #[error("no answer within the timeout")]
    Timeout,
    #[error("the gateway could not be reached")]
    Unreachable,
    #[error("the login page answered {0}")]
    LoginPage(u16),
    #[error("the REST API answered {0}")]
    Rest(u16),
    #[error("the REST API did not authenticate the admin account")]
    NotAuthenticated,
}

impl ProbeFailure {
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeFailure::NoGatewayAddress => "NoGatewayAddress",
            ProbeFailure::NoCredentials => "NoCredentials",
            ProbeFailure::Timeout => "Timeout",
            ProbeFailure::Unreachable => "Unreachable",
            ProbeFailure::LoginPage(_) => "LoginPage",
            ProbeFailure::Rest(_) => "Rest",
            ProbeFailure::NotAuthenticated => "NotAuthenticated",
        }
    }
}

/// What status says of a clinic's probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Fewer than `failuresBeforeDown` probes in a row failed.
    pub answering: bool,
    /// The last failure, while failures run.
    pub failure: Option<ProbeFailure>,
    /// Failed probes in a row.
    pub failures_in_row: u32,
}

#[derive(Debug, Default)]
struct Record {
    failures_in_row: u32,
    last_failure: Option<ProbeFailure>,
    probed: bool,
    /// (cache marker, cluster IP) of the gateway Service.
    address: Option<(Marker, String)>,
    credentials: Option<(String, Instant)>,
}

/// The probes' findings, shared by the prober and the reconciles.
#[derive(Debug, Default)]
pub struct Probes {
    records: Mutex<HashMap<ClinicKey, Record>>,
}

impl Probes {
    fn with<T>(&self, key: &ClinicKey, f: impl FnOnce(&mut Record) -> T) -> T {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        f(records.entry(key.clone()).or_default())
    }

    /// The verdict on a clinic, `None` before its first probe.
    pub fn verdict(&self, namespace: &str, name: &str, policy: &ClinicProbePolicy) -> Option<Verdict> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let record = records.get(&(namespace.to_string(), name.to_string())).filter(|r| r.probed)?;
        Some(Verdict {
            answering: record.failures_in_row < policy.failures_before_down,
            failure: record.last_failure.clone(),
            failures_in_row: record.failures_in_row,
        })
    }

    /// Records a probe's outcome; returns whether the verdict changed.
    pub fn record(
        &self,
        key: &ClinicKey,
        outcome: &Result<(), ProbeFailure>,
        policy: &ClinicProbePolicy,
    ) -> bool {
        self.with(key, |record| {
            let answering = |r: &Record| !r.probed || r.failures_in_row < policy.failures_before_down;
            let before = (answering(record), record.probed);
            match outcome {
                Ok(()) => {
                    record.failures_in_row = 0;
                    record.last_failure = None;
                }
                Err(failure) => {
                    record.failures_in_row = record.failures_in_row.saturating_add(1);
                    record.last_failure = Some(failure.clone());
                    if *failure == ProbeFailure::NotAuthenticated {
                        // Perhaps rotated: read again next time.
                        record.credentials = None;
                    }
                }
            }
            record.probed = true;
            before != (answering(record), true)
        })
    }

    /// Forgets a deleted clinic.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(&(namespace.to_string(), name.to_string()));
    }
}

/// Probes every clinic of `clinics` each interval until dropped; a changed verdict asks for a
/// reconcile of the clinic through `reconcile`.
pub async fn run(
    ctx: Arc<Context>,
    policy: ClinicProbePolicy,
    clinics: Store<DeserializeGuard<ClinicPlatform>>,
    reconcile: mpsc::Sender<ObjectRef<DeserializeGuard<ClinicPlatform>>>,
) {
    // A new connection for every request, as a new user's browser makes: a kept-alive one
    // would always reach the same gateway pod (or, opened before kube-proxy knew the Service,
    // whatever answered then).
    let client = match reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(policy.timeout_seconds))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "cannot make the probe's HTTP client: clinics are not probed");
            return;
        }
    };
    info!(interval = policy.interval_seconds, timeout = policy.timeout_seconds, "probing clinics");
    let mut tick = tokio::time::interval(Duration::from_secs(policy.interval_seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let probed: Vec<_> = clinics
            .state()
            .iter()
            .filter_map(|guarded| guarded.0.as_ref().ok().cloned())
            .filter(|cp| cp.metadata.deletion_timestamp.is_none())
            .filter_map(|cp| crate::model::validate(&cp).ok().map(|clinic| (cp, clinic)))
            .filter(|(_, clinic)| !clinic.spec.paused)
            .collect();
        futures::stream::iter(probed)
            .map(|(cp, clinic)| {
                let (ctx, client, policy, mut reconcile) =
                    (ctx.clone(), client.clone(), policy.clone(), reconcile.clone());
                async move {
                    let key = (clinic.namespace.clone(), clinic.name.clone());
                    let started = Instant::now();
                    let outcome = probe(&ctx, &client, &policy, &clinic).await;
                    let seconds = started.elapsed().as_secs_f64();
                    ctx.metrics.observe_probe(&clinic.namespace, &clinic.name, outcome.is_ok(), seconds);
                    if let Err(failure) = &outcome {
                        debug!(clinic = %clinic.name, namespace = %clinic.namespace, reason = failure.reason(), "probe failed");
                    }
                    if ctx.probes.record(&key, &outcome, &policy) {
                        info!(clinic = %clinic.name, namespace = %clinic.namespace, answering = outcome.is_ok(), "probe verdict changed");
                        let target = ObjectRef::<DeserializeGuard<ClinicPlatform>>::new(&cp.metadata.name.clone().unwrap_or_default())
                            .within(&clinic.namespace);
                        let _ = reconcile.try_send(target);
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<()>()
            .await;
    }
}

/// One probe: the login page, then the session as `admin`, both within the timeout.
async fn probe(
    ctx: &Context,
    client: &reqwest::Client,
    policy: &ClinicProbePolicy,
    clinic: &Clinic,
) -> Result<(), ProbeFailure> {
    let key = (clinic.namespace.clone(), clinic.name.clone());
    let address = gateway_address(ctx, clinic, &key).await?;
    let password = admin_password(ctx, clinic, &key).await?;
    let base = format!("http://{address}:{}", crate::desired::gateway::SERVICE_PORT);
    let requests = async {
        let login = client.get(format!("{base}{LOGIN_PATH}")).send().await.map_err(sent)?;
        if !login.status().is_success() {
            return Err(ProbeFailure::LoginPage(login.status().as_u16()));
        }
        let session = client
            .get(format!("{base}{REST_PATH}"))
            .basic_auth("admin", Some(password))
            .send()
            .await
            .map_err(sent)?;
        let status = session.status();
        let body = session.text().await.map_err(sent)?;
        match status.as_u16() {
            200 if body.replace(' ', "").contains("\"authenticated\":true") => Ok(()),
            200 | 401 | 403 => Err(ProbeFailure::NotAuthenticated),
            other => Err(ProbeFailure::Rest(other)),
        }
    };
    tokio::time::timeout(Duration::from_secs(policy.timeout_seconds), requests)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout))
}

fn sent(e: reqwest::Error) -> ProbeFailure {
    if e.is_timeout() { ProbeFailure::Timeout } else { ProbeFailure::Unreachable }
}

/// The gateway Service's cluster IP: read again only when the cache shows the Service changed
/// (or made again).
async fn gateway_address(ctx: &Context, clinic: &Clinic, key: &ClinicKey) -> Result<String, ProbeFailure> {
    let name = crate::desired::gateway::name(clinic);
    let kind = kube::api::ApiResource::erase::<Service>(&());
    let marker = ctx
        .caches
        .get(&kind, &clinic.namespace, &name)
        .map(|s| s.marker)
        .ok_or(ProbeFailure::NoGatewayAddress)?;
    let known = ctx.probes.with(key, |r| r.address.clone().filter(|(m, _)| *m == marker));
    if let Some((_, ip)) = known {
        return Ok(ip);
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    let service = api.get(&name).await.map_err(|_| ProbeFailure::NoGatewayAddress)?;
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or(ProbeFailure::NoGatewayAddress)?;
    ctx.probes.with(key, |r| r.address = Some((marker, ip.clone())));
    Ok(ip)
}

/// The admin password, read from its Secret at most every [`CREDENTIALS_TTL`].
async fn admin_password(ctx: &Context, clinic: &Clinic, key: &ClinicKey) -> Result<String, ProbeFailure> {
    let known =
        ctx.probes.with(key, |r| r.credentials.clone().filter(|(_, at)| at.elapsed() < CREDENTIALS_TTL));
    if let Some((password, _)) = known {
        return Ok(password);
    }
    let admin = clinic.admin_password();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    let secret = api.get(&admin.secret).await.map_err(|_| ProbeFailure::NoCredentials)?;
    let password = secret
        .data
        .and_then(|data| data.get(&admin.key).cloned())
        .and_then(|value| String::from_utf8(value.0).ok())
        .filter(|p| !p.is_empty())
        .ok_or(ProbeFailure::NoCredentials)?;
    ctx.probes.with(key, |r| r.credentials = Some((password.clone(), Instant::now())));
    Ok(password)
}
