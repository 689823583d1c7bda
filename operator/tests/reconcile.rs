//! One reconcile against a mocked API server (tower-test): the exact requests it sends.
//!
//! The caches are seeded the way the watches would fill them; the mock answers like an API
//! server (apply returns the applied object, absent objects are 404) and records every request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clinic_operator::api::ClinicPlatform;
use clinic_operator::desired::{self, SecretValues};
use clinic_operator::metrics::Metrics;
use clinic_operator::model;
use clinic_operator::reconcile::caches::{CacheWriters, Caches, ChildRecord, OptionalWriter};
use clinic_operator::reconcile::ledger::Ledger;
use clinic_operator::reconcile::{self, Context, converge};
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::client::Body;
use kube::core::{DeserializeGuard, TypeMeta};
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use serde_json::{Value, json};

const UID: &str = "6c8e6f2a-1d0b-4a8e-9a53-3f0e3b9c1a11";

fn clinic_platform(spec: &str) -> ClinicPlatform {
    let yaml = format!(
        "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: lyon\n  namespace: clinic-lyon\n  uid: {UID}\n  generation: 1\nspec:\n{spec}"
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// What the API server would hold after a successful apply: the declared body with status.
fn live_children(cp: &ClinicPlatform) -> Vec<DynamicObject> {
    live_children_with_certificate(cp, SEEDED_NOT_AFTER)
}

/// [`live_children`], MariaDB started with a certificate that ends at `not_after`.
fn live_children_with_certificate(cp: &ClinicPlatform, not_after: &str) -> Vec<DynamicObject> {
    let mut clinic = model::validate(cp).unwrap();
    clinic.database_certificate = clinic.database_tls().then(|| clinic_operator::api::CertificateStatus {
        not_after: not_after.into(),
        ..seeded_certificate()
    });
    desired::objects(&clinic, &SecretValues::Placeholder)
        .iter()
        .filter(|o| o.types.as_ref().unwrap().kind != "Secret")
        .map(|o| {
            let (mut value, _) = converge::declared(o).unwrap();
            value["metadata"]["generation"] = json!(1);
            value["metadata"]["resourceVersion"] = json!("1");
            match value["kind"].as_str().unwrap() {
                "StatefulSet" | "Deployment" => {
                    let replicas = value["spec"]["replicas"].as_i64().unwrap_or(2);
                    value["status"] = json!({
                        "observedGeneration": 1,
                        "replicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                        "updatedReplicas": replicas,
                    });
                    if value["kind"] == "Deployment" {
                        value["spec"]["replicas"] = json!(replicas);
                    }
                }
                _ => {}
            }
            serde_json::from_value(value).unwrap()
        })
        .collect()
}

/// End of validity of the database certificate the seeded caches hold (issued by the clinic's
/// CA, far from renewal).
const SEEDED_NOT_AFTER: &str = "2099-01-01T00:00:00Z";
const SEEDED_CA_SHA256: &str = "ab12";

fn seeded_certificate() -> clinic_operator::api::CertificateStatus {
    clinic_operator::api::CertificateStatus {
        not_after: SEEDED_NOT_AFTER.into(),
        issuer: String::new(),
        secret_version: String::new(),
    }
}

fn secret_meta(
    name: String,
    labels: BTreeMap<String, String>,
    annotations: &[(&str, &str)],
) -> PartialObjectMeta<Secret> {
    PartialObjectMeta {
        types: Some(TypeMeta { api_version: "v1".into(), kind: "Secret".into() }),
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some("clinic-lyon".into()),
            labels: Some(labels),
            annotations: (!annotations.is_empty())
                .then(|| annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        _phantom: Default::default(),
    }
}

/// The Secrets of a converged clinic: the generated ones, and its database CA and certificate.
fn secret_metadata(cp: &ClinicPlatform) -> Vec<PartialObjectMeta<Secret>> {
    use clinic_operator::desired::internal_tls::{CA_FINGERPRINT_ANNOTATION, Leaf, NOT_AFTER_ANNOTATION};
    let clinic = model::validate(cp).unwrap();
    let labels = clinic.labels(model::Component::Platform);
    let mut out: Vec<_> = desired::secrets::generated(&clinic)
        .into_iter()
        .map(|g| secret_meta(g.name, labels.clone(), &[]))
        .collect();
    if clinic.runs_clinic_ca() {
        out.push(secret_meta(
            clinic.clinic_ca_secret(),
            labels.clone(),
            &[(CA_FINGERPRINT_ANNOTATION, SEEDED_CA_SHA256)],
        ));
    }
    for leaf in Leaf::ALL.into_iter().filter(|leaf| leaf.runs_ca(&clinic)) {
        out.push(secret_meta(
            leaf.secret_name(&clinic),
            labels.clone(),
            &[(CA_FINGERPRINT_ANNOTATION, SEEDED_CA_SHA256), (NOT_AFTER_ANNOTATION, SEEDED_NOT_AFTER)],
        ));
    }
    out
}

/// Fills the caches as a completed initial list would; the clinic's namespace already carries the
/// Pod Security labels when children exist (a converged clinic).
/// The caches as the watches fill them, and the objects the mocked API server answers GETs with.
struct Seeded {
    caches: Caches,
    live: Vec<DynamicObject>,
    /// The writers of the optional APIs' caches (the Prometheus Operator's kinds), to deliver
    /// a change as their watch would.
    optional: Vec<(kube::api::ApiResource, OptionalWriter<ChildRecord>)>,
}

async fn seeded(children: Vec<DynamicObject>, secrets: Vec<PartialObjectMeta<Secret>>) -> Seeded {
    let labelled = !children.is_empty();
    let (
        caches,
        CacheWriters {
            children: mut writers,
            secrets: mut secret_writer,
            namespaces: mut namespace_writer,
            mut optional,
            ..
        },
    ) = Caches::new();
    namespace_writer.apply_watcher_event(&Event::Init);
    namespace_writer.apply_watcher_event(&Event::InitApply(PartialObjectMeta::<Namespace> {
        types: Some(TypeMeta { api_version: "v1".into(), kind: "Namespace".into() }),
        metadata: ObjectMeta {
            name: Some("clinic-lyon".into()),
            labels: labelled.then(clinic_operator::reconcile::converge::pod_security_labels),
            ..Default::default()
        },
        _phantom: Default::default(),
    }));
    namespace_writer.apply_watcher_event(&Event::InitDone);
    std::mem::forget(namespace_writer);
    for (ar, writer) in &mut writers {
        writer.apply_watcher_event(&Event::Init);
        for child in children.iter().filter(|c| c.types.as_ref().unwrap().kind == ar.kind) {
            writer.apply_watcher_event(&Event::InitApply(child.clone()));
        }
        writer.apply_watcher_event(&Event::InitDone);
    }
    for (ar, writer) in &mut optional {
        writer.apply_watcher_result(&Ok(Event::Init));
        for child in children.iter().filter(|c| c.types.as_ref().unwrap().kind == ar.kind) {
            writer.apply_watcher_result(&Ok(Event::InitApply(child.clone())));
        }
        writer.apply_watcher_result(&Ok(Event::InitDone));
    }
    secret_writer.apply_watcher_event(&Event::Init);
    for s in secrets {
        secret_writer.apply_watcher_event(&Event::InitApply(s));
    }
    secret_writer.apply_watcher_event(&Event::InitDone);
    caches.wait_ready().await;
    // The writers may go: the stores keep their contents.
    std::mem::forget(writers);
    std::mem::forget(secret_writer);
    Seeded { caches, live: children, optional }
}

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

impl Call {
    fn mutating(&self) -> bool {
        self.method != "GET"
    }
    fn is(&self, method: &str, path_part: &str) -> bool {
        self.method == method && self.path.contains(path_part)
    }
}

/// Path of a namespaced child, as the client requests it (`.../namespaces/<ns>/<plural>/<name>`).
fn object_path(o: &DynamicObject) -> Option<String> {
    let kind = &o.types.as_ref()?.kind;
    let plural = match kind.as_str() {
        "Secret" => "secrets".to_string(),
        _ => {
            clinic_operator::reconcile::caches::child_kinds().into_iter().find(|ar| &ar.kind == kind)?.plural
        }
    };
    Some(format!("/namespaces/{}/{plural}/{}", o.metadata.namespace.as_deref()?, o.metadata.name.as_deref()?))
}

/// A fake API server: answers every request and records it; GETs of `live` objects return them.
fn mock_api(live: Vec<DynamicObject>) -> (Client, Arc<Mutex<Vec<Call>>>) {
    mock_api_failing(live, &[])
}

/// [`mock_api`], answering GETs of the `failing` paths with a 500.
fn mock_api_failing(
    live: Vec<DynamicObject>,
    failing: &'static [&'static str],
) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let live: Vec<(String, Value)> =
        live.iter().filter_map(|o| Some((object_path(o)?, serde_json::to_value(o).unwrap()))).collect();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            recorded.lock().unwrap().push(Call {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
            });
            let found = live.iter().find(|(p, _)| path.split('?').next().unwrap().ends_with(p.as_str()));
            let (status, reply) = match method.as_str() {
                "GET" if failing.contains(&path.split('?').next().unwrap()) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcdserver: request timed out"}),
                ),
                "GET" if found.is_some() => (StatusCode::OK, found.unwrap().1.clone()),
                "GET" => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
                "POST" => (StatusCode::CREATED, body),
                _ => {
                    let mut reply = body;
                    if !reply["metadata"].is_object() {
                        // A status patch carries no metadata; the server's answer does.
                        reply["metadata"] = json!({"name": "lyon", "namespace": "clinic-lyon"});
                    }
                    reply["metadata"]["resourceVersion"] = json!("2");
                    (StatusCode::OK, reply)
                }
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), calls)
}

async fn run(cp: &ClinicPlatform, seeded: Seeded) -> (Result<(), String>, Vec<Call>) {
    let (client, calls) = mock_api(seeded.live);
    let ctx = Arc::new(Context::new(client, seeded.caches, Arc::new(Metrics::new()), Some("test".into())));
    run_with(cp, &ctx, &calls).await
}

/// Reads the context caches for a while (discovery of optional APIs, StorageClasses).
fn cached_read(c: &Call) -> bool {
    c.method == "GET"
        && (c.path == "/apis/velero.io/v1"
            || c.path == "/apis/cert-manager.io/v1"
            || c.path == "/apis/gateway.networking.k8s.io/v1"
            || c.path == "/apis/monitoring.coreos.com/v1"
            || c.path == "/apis/monitoring.coreos.com/v1alpha1"
            || c.path == "/apis/security.istio.io/v1"
            || c.path == "/apis/autoscaling.k8s.io/v1"
            || c.path == "/apis/k8s.mariadb.com/v1alpha1"
            || c.path.starts_with("/apis/storage.k8s.io/v1/storageclasses"))
}

/// One reconcile with a given context; returns the calls it made (discovery of Velero, a read
/// the context caches, is left out: the mock answers that Velero is not installed).
async fn run_with(
    cp: &ClinicPlatform,
    ctx: &Arc<Context>,
    calls: &Arc<Mutex<Vec<Call>>>,
) -> (Result<(), String>, Vec<Call>) {
    calls.lock().unwrap().clear();
    let result = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp.clone()))), ctx.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = calls.lock().unwrap().iter().filter(|c| !cached_read(c)).cloned().collect();
    (result.map(|_| ()).map_err(|e| e.to_string()), calls)
}

/// Writes to children: everything mutating except events and the status.
fn child_writes(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.mutating() && !c.path.contains("/events") && !c.path.contains("/status"))
        .collect()
}

/// The status a reconcile wrote (to seed a converged ClinicPlatform).
fn written_status(calls: &[Call]) -> Value {
    calls.iter().find(|c| c.is("PATCH", "/status")).expect("a status write").body["status"].clone()
}

fn written_condition(calls: &[Call], type_: &str) -> Value {
    written_status(calls)["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} written"))
}

#[tokio::test]
async fn the_backends_certificate_comes_from_the_same_ca_made_once() {
    let cp = clinic_platform("  openmrs: {backend: {tls: {enabled: true}}}\n");
    let (result, calls) = run(&cp, seeded(vec![], vec![]).await).await;
    result.unwrap();
    let secrets: Vec<String> = calls
        .iter()
        .take_while(|c| {
            !c.path.starts_with("/api/v1/namespaces/clinic-lyon?")
                && c.path != "/api/v1/namespaces/clinic-lyon"
        })
        .map(|c| match c.method.as_str() {
            "POST" => format!("POST {}", c.body["metadata"]["name"].as_str().unwrap()),
            method => format!("{method} {}", c.path.split('?').next().unwrap().rsplit('/').next().unwrap()),
        })
        .collect();
    assert_eq!(
        secrets,
        [
            "GET lyon-db-ca",
            "GET lyon-db-tls",
            "POST lyon-db-ca",
            "POST lyon-db-tls",
            "GET lyon-backend-tls",
            "POST lyon-backend-tls",
        ],
        "the CA made for MariaDB's certificate signs the backend's, without being read again"
    );
    let fingerprint = |name: &str| {
        let call = calls.iter().find(|c| c.method == "POST" && c.body["metadata"]["name"] == name).unwrap();
        call.body["metadata"]["annotations"]["clinic.audioprothese.fr/ca-sha256"].clone()
    };
    assert_eq!(fingerprint("lyon-db-tls"), fingerprint("lyon-backend-tls"));
    assert_eq!(fingerprint("lyon-db-ca"), fingerprint("lyon-db-tls"));
    let status = written_status(&calls);
    assert!(status["backendCertificate"]["notAfter"].is_string(), "{status}");
    assert_eq!(status["backendCertificate"]["issuer"], "the clinic's CA (Secret lyon-db-ca)");

    // Converged, nothing is issued again.
    let mut converged = cp.clone();
    converged.status = serde_json::from_value(status).unwrap();
    let (result, calls) = run(&converged, seeded(vec![], secret_metadata(&converged)).await).await;
    result.unwrap();
    assert!(!calls.iter().any(|c| c.path.contains("/secrets") && c.mutating()), "{calls:?}");
}

#[tokio::test]
async fn create_from_nothing() {
    let cp = clinic_platform("  {}\n");
    let (result, calls) = run(&cp, seeded(vec![], vec![]).await).await;
    result.unwrap();
    let summary: Vec<String> =
        calls.iter().map(|c| format!("{} {}", c.method, c.path.split('?').next().unwrap())).collect();

    // MariaDB's certificate first, since its end of validity goes into MariaDB's pod template:
    // the clinic's CA looked for, made, and the certificate it signs.
    // Both looked for first (the cache may lag behind the pass before), then the CA made, and
    // the certificate it signs.
    assert_eq!(summary[0], "GET /api/v1/namespaces/clinic-lyon/secrets/lyon-db-ca");
    assert_eq!(summary[1], "GET /api/v1/namespaces/clinic-lyon/secrets/lyon-db-tls");
    assert_eq!(summary[2], "POST /api/v1/namespaces/clinic-lyon/secrets");
    assert_eq!(calls[2].body["metadata"]["name"], "lyon-db-ca");
    assert_eq!(summary[3], "POST /api/v1/namespaces/clinic-lyon/secrets");
    assert_eq!(calls[3].body["metadata"]["name"], "lyon-db-tls");
    assert_eq!(calls[3].body["type"], "kubernetes.io/tls");
    let not_after = calls[3].body["metadata"]["annotations"]["clinic.audioprothese.fr/not-after"].clone();
    let private_keys: Vec<String> = [&calls[2].body["data"]["ca.key"], &calls[3].body["data"]["tls.key"]]
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let calls = calls[4..].to_vec();
    let summary = summary[4..].to_vec();

    // The namespace gets its Pod Security labels next.
    assert_eq!(summary[0], "PATCH /api/v1/namespaces/clinic-lyon");
    assert_eq!(calls[0].body["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    // Generated Secrets: the database volume checked, once for the two whose password the data
    // keeps (the database's and OpenMRS admin's; the encryption keys only once the status
    // records data encrypted with them), then each created once, without a read (a 409 would say
    // it exists).
    let claim = "GET /api/v1/namespaces/clinic-lyon/persistentvolumeclaims/data-lyon-mariadb-0";
    let create = "POST /api/v1/namespaces/clinic-lyon/secrets";
    assert_eq!(summary[1..6], [claim, create, create, create, create]);
    let created: Vec<&Value> = calls[1..6]
        .iter()
        .filter(|c| c.is("POST", "/secrets"))
        .map(|c| &c.body["metadata"]["name"])
        .collect();
    assert_eq!(
        created,
        ["lyon-db-credentials", "lyon-mariadb-exporter", "lyon-db-encryption", "lyon-openmrs-admin"]
    );
    let created: Vec<&Value> = calls.iter().filter(|c| c.is("POST", "/secrets")).map(|c| &c.body).collect();
    let password = created[0]["stringData"]["password"].as_str().unwrap();
    assert!(password.len() >= 32 && password != desired::secrets::PLACEHOLDER);
    assert!(
        created[0]["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty),
        "Retain: credentials outlive the clinic"
    );

    // Every other child: one server-side apply each, with our field manager, forced.
    let applies: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            c.method == "PATCH"
                && !c.path.contains("/status")
                && !c.path.contains("/events")
                && c.path.split('?').next() != Some("/api/v1/namespaces/clinic-lyon")
        })
        .collect();
    // 21 platform children, 2 metrics Services and the dashboard (no Prometheus Operator here).
    assert_eq!(applies.len(), 24, "{:#?}", applies.iter().map(|c| &c.path).collect::<Vec<_>>());
    for a in &applies {
        assert!(
            a.path.contains("fieldManager=clinic-operator") && a.path.contains("force=true"),
            "{}",
            a.path
        );
        assert!(a.body["metadata"]["annotations"][converge::DESIRED_HASH_ANNOTATION].is_string());
    }
    // One status write; events after it.
    let status = calls.iter().filter(|c| c.is("PATCH", "/clinicplatforms/lyon/status")).count();
    assert_eq!(status, 1);
    let written = written_status(&calls);
    assert_eq!(written["observedGeneration"], 1);
    assert!(
        written["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Progressing" && c["status"] == "True")
    );
    let events: Vec<&Call> = calls.iter().filter(|c| c.path.contains("/events")).collect();
    assert_eq!(events.len(), 1, "one Created event for the pass: {events:?}");
    assert_eq!(events[0].body["reason"], "Created");
    assert_eq!(events[0].body["note"], "created 28 objects");
    // No password nor private key in any event or status.
    for c in calls.iter().filter(|c| c.path.contains("/events") || c.path.contains("/status")) {
        assert!(!c.body.to_string().contains(password), "a password leaked into {}", c.path);
        for key in &private_keys {
            assert!(!c.body.to_string().contains(key.as_str()), "a private key leaked into {}", c.path);
        }
    }
    // The certificate's end of validity is in the status and MariaDB's pod template.
    assert_eq!(written["databaseCertificate"]["notAfter"], not_after);
    assert_eq!(written["compliance"]["databaseTls"], false, "no MariaDB pod runs it yet");
    let mariadb = applies.iter().find(|c| c.path.contains("/statefulsets/lyon-mariadb")).unwrap();
    assert_eq!(
        mariadb.body["spec"]["template"]["metadata"]["annotations"]["clinic.audioprothese.fr/db-tls-not-after"],
        not_after
    );
}

#[tokio::test]
async fn converged_clinic_sends_no_request_at_all() {
    let mut cp = clinic_platform("  {}\n");
    let children = live_children(&cp);
    let seeded = seeded(children, secret_metadata(&cp)).await;
    let (client, log) = mock_api(seeded.live);
    let ctx = Arc::new(Context::new(client, seeded.caches, Arc::new(Metrics::new()), None));
    // First pass over a converged cluster (a fresh operator) reads each child once to verify it
    // and writes only the status; take that status...
    let (result, calls) = run_with(&cp, &ctx, &log).await;
    result.unwrap();
    assert!(
        calls.iter().all(|c| c.method == "GET" || c.is("PATCH", "/status")),
        "only the status: {calls:?}"
    );
    let gets: Vec<&str> = calls.iter().filter(|c| c.method == "GET").map(|c| c.path.as_str()).collect();
    assert_eq!(gets.len(), 24, "one read per cached child: {gets:#?}");
    cp.status = Some(serde_json::from_value(written_status(&calls)).unwrap());
    // ...then a second pass must send nothing: no apply, no status, no event, not even a GET
    // (Velero discovery is cached in the context).
    log.lock().unwrap().clear();
    let result = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp.clone()))), ctx.clone()).await;
    result.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = log.lock().unwrap().clone();
    assert!(calls.is_empty(), "a converged clinic sent {calls:?}");
}

/// A fresh operator over `children` (new caches and memory) that shares `ledger`: the calls of its
/// first pass.
async fn first_pass_of_a_fresh_operator(
    cp: &ClinicPlatform,
    children: Vec<DynamicObject>,
    ledger: &Arc<Ledger>,
) -> Vec<Call> {
    let fresh = seeded(children, secret_metadata(cp)).await;
    let (client, log) = mock_api(fresh.live);
    let ctx = Context::new(client, fresh.caches, Arc::new(Metrics::new()), None).with_ledger(ledger.clone());
    let (result, calls) = run_with(cp, &Arc::new(ctx), &log).await;
    result.unwrap();
    calls
}

#[tokio::test]
async fn a_restart_trusts_the_ledger_only_for_children_unchanged_since() {
    let mut cp = clinic_platform("  {}\n");
    let children = live_children(&cp);
    let ledger = Arc::new(Ledger::disabled());
    let reads = |calls: &[Call]| calls.iter().filter(|c| c.method == "GET").count();
    // The first operator reads every child once, finds them as declared, and writes that down.
    let calls = first_pass_of_a_fresh_operator(&cp, children.clone(), &ledger).await;
    assert_eq!(reads(&calls), 24, "{calls:#?}");
    let key = ("clinic-lyon".to_string(), "lyon".to_string());
    assert!(ledger.digest_of(&key).is_some(), "every child verified: the clinic is in the ledger");
    cp.status = Some(serde_json::from_value(written_status(&calls)).unwrap());
    // Restarted over the same children: nothing changed since, nothing is read.
    let calls = first_pass_of_a_fresh_operator(&cp, children.clone(), &ledger).await;
    assert_eq!(reads(&calls), 0, "the ledger showed them unchanged: {calls:#?}");
    assert!(child_writes(&calls).is_empty(), "{calls:#?}");
    // Restarted after someone changed one child while no operator ran: its marker moved, so
    // every child is read again, and the change is put back.
    let edited: Vec<DynamicObject> = children
        .into_iter()
        .map(|mut c| {
            if c.metadata.name.as_deref() == Some("lyon-default-deny") {
                c.data["spec"]["ingress"] = json!([{}]);
                c.metadata.resource_version = Some("7".into());
            }
            c
        })
        .collect();
    let calls = first_pass_of_a_fresh_operator(&cp, edited, &ledger).await;
    assert_eq!(reads(&calls), 24, "a moved marker: every child read again: {calls:#?}");
    let writes = child_writes(&calls);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].is("PATCH", "/networkpolicies/lyon-default-deny"));
}

/// cert-manager's API is served; every other GET is a 404.
fn cert_manager_served() -> (Client, Recorded) {
    answering_or_absent(|line, _, _| {
        (line == "GET /apis/cert-manager.io/v1").then(|| {
            let certificates = json!({"name": "certificates", "singularName": "certificate", "namespaced": true,
                "kind": "Certificate", "verbs": ["get", "list", "create", "patch", "delete"]});
            let list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "cert-manager.io/v1",
                "resources": [certificates]});
            (StatusCode::OK, list)
        })
    })
}

#[tokio::test]
async fn a_restart_looks_for_leftovers_only_where_the_ledger_has_no_clean_check_of_this_version() {
    let mut cp = clinic_platform("  {}\n");
    let children = live_children(&cp);
    let ledger = Arc::new(Ledger::disabled());
    let calls = first_pass_of_a_fresh_operator(&cp, children.clone(), &ledger).await;
    cp.status = Some(serde_json::from_value(written_status(&calls)).unwrap());
    let key = ("clinic-lyon".to_string(), "lyon".to_string());
    assert!(ledger.uncached_version_of(&key).is_some(), "a clean check is written down");
    let restarted = |ledger: Arc<Ledger>| {
        let cp = cp.clone();
        let children = children.clone();
        async move {
            let fresh = seeded(children, secret_metadata(&cp)).await;
            let (client, calls) = cert_manager_served();
            let ctx = Arc::new(
                Context::new(client, fresh.caches, Arc::new(Metrics::new()), None).with_ledger(ledger),
            );
            // Two passes: the first after a restart may leave the uncached check to the next
            // (`a_restart_defers_the_uncached_check_of_a_ready_clinic_nothing_changed`).
            let cp = Arc::new(DeserializeGuard(Ok(cp)));
            for _ in 0..2 {
                reconcile::reconcile(cp.clone(), ctx.clone()).await.unwrap();
            }
            lines(&calls).into_iter().filter(|l| l.contains("/certificates/")).count()
        }
    };
    // The same version as the last clean check: no Certificate (the default clinic wants none)
    // can be left over.
    assert_eq!(restarted(ledger.clone()).await, 0);
    // No clean check of this version known (an older ledger, another spec or policy): every
    // Certificate the clinic could have had is looked for, to remove it.
    let older = Arc::new(Ledger::disabled());
    older.record(&key, ledger.digest_of(&key));
    older.record_uncached(&key, "another version".into(), None);
    assert!(restarted(older).await > 0, "leftovers looked for");
}

/// The Prometheus Operator's API is served; every other GET is a 404.
fn prometheus_operator_served() -> (Client, Recorded) {
    answering_or_absent(|line, _, _| {
        (line == "GET /apis/monitoring.coreos.com/v1").then(|| {
            let resource = |name: &str, kind: &str| {
                json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
                    "verbs": ["get", "list", "create", "patch", "delete"]})
            };
            let list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
                "resources": [resource("servicemonitors", "ServiceMonitor"), resource("prometheusrules", "PrometheusRule")]});
            (StatusCode::OK, list)
        })
    })
}

/// When a pass asks to come back, in seconds (`Action` shows it only in its `Debug`).
fn requeue_seconds(action: &kube::runtime::controller::Action) -> f64 {
    let shown = format!("{action:?}");
    let seconds = shown.split("Some(").nth(1).and_then(|s| s.split("s)").next());
    seconds.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no requeue in {shown}"))
}

#[tokio::test]
async fn a_restart_defers_the_uncached_check_of_a_ready_clinic_nothing_changed() {
    let mut cp = clinic_platform("  {}\n");
    cp.metadata.generation = Some(1);
    let children = live_children(&cp);
    let ledger = Arc::new(Ledger::disabled());
    let calls = first_pass_of_a_fresh_operator(&cp, children.clone(), &ledger).await;
    cp.status = Some(serde_json::from_value(written_status(&calls)).unwrap());
    let ready = |cp: &ClinicPlatform| {
        cp.status.as_ref().unwrap().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    };
    assert!(ready(&cp), "{:#?}", cp.status);
    let monitor_calls =
        |calls: &Recorded| lines(calls).into_iter().filter(|l| l.contains("/servicemonitors")).count();
    // Restarted; the Prometheus Operator, which the clinic wants a ServiceMonitor of, is served.
    let restarted = |cp: ClinicPlatform, children: Vec<DynamicObject>| {
        let ledger = ledger.clone();
        async move {
            let fresh = seeded(children, secret_metadata(&cp)).await;
            let (client, calls) = prometheus_operator_served();
            let ctx = Arc::new(
                Context::new(client, fresh.caches, Arc::new(Metrics::new()), None).with_ledger(ledger),
            );
            let cp = Arc::new(DeserializeGuard(Ok(cp)));
            let first = reconcile::reconcile(cp.clone(), ctx.clone()).await.unwrap();
            let first_calls = lines(&calls);
            let second = reconcile::reconcile(cp, ctx).await.unwrap();
            (first, first_calls, second, calls)
        }
    };
    // Ready, every child and the uncached check as the ledger has them: the first pass asks
    // nothing and comes back within the minute the uncached objects are checked in anyway...
    let (first, first_calls, _, calls) = restarted(cp.clone(), children.clone()).await;
    assert!(first_calls.is_empty(), "{first_calls:#?}");
    let wait = requeue_seconds(&first);
    assert!((1.0..60.0).contains(&wait), "{wait}");
    // ...where the full pass reads (and here, writes) the ServiceMonitor.
    assert!(monitor_calls(&calls) > 0);
    // A clinic not Ready takes the full pass at once.
    let mut converging = cp.clone();
    for c in &mut converging.status.as_mut().unwrap().conditions {
        if c.type_ == "Ready" {
            c.status = "False".into();
        }
    }
    let (_, first_calls, _, _) = restarted(converging, children.clone()).await;
    assert!(first_calls.iter().any(|l| l.contains("/servicemonitors")), "{first_calls:#?}");
    // So does one whose spec changed since (its generation).
    let mut changed = cp.clone();
    changed.metadata.generation = Some(2);
    let (_, first_calls, _, _) = restarted(changed, children.clone()).await;
    assert!(first_calls.iter().any(|l| l.contains("/servicemonitors")), "{first_calls:#?}");
    // And one whose database lost its ready pod while no operator ran (a status change: the
    // ledger's markers do not move).
    let unready: Vec<DynamicObject> = children
        .into_iter()
        .map(|mut c| {
            if c.types.as_ref().is_some_and(|t| t.kind == "StatefulSet") {
                c.data["status"]["readyReplicas"] = json!(0);
            }
            c
        })
        .collect();
    let (_, first_calls, _, _) = restarted(cp, unready).await;
    assert!(first_calls.iter().any(|l| l.contains("/servicemonitors")), "{first_calls:#?}");
}

/// The Prometheus Operator's API is served; GETs of the objects in `live` (children, monitors)
/// answer them as they stand there now; every other GET is a 404.
fn serving_monitors(live: Arc<Mutex<Vec<DynamicObject>>>) -> (Client, Recorded) {
    answering_or_absent(move |line, method, _| {
        if line == "GET /apis/monitoring.coreos.com/v1" {
            let resource = |name: &str, kind: &str| {
                json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
                    "verbs": ["get", "list", "watch", "create", "patch", "delete"]})
            };
            let list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
                "resources": [resource("servicemonitors", "ServiceMonitor"), resource("prometheusrules", "PrometheusRule")]});
            return Some((StatusCode::OK, list));
        }
        if method != http::Method::GET {
            return None;
        }
        let live = live.lock().unwrap();
        let found = live.iter().find(|o| {
            let plural = clinic_operator::reconcile::caches::child_kinds()
                .into_iter()
                .chain(clinic_operator::reconcile::caches::watched_optional_kinds())
                .find(|ar| ar.kind == o.types.as_ref().unwrap().kind)
                .map(|ar| ar.plural);
            plural.is_some_and(|p| line.ends_with(&format!("/{p}/{}", o.metadata.name.as_deref().unwrap())))
        });
        found.map(|o| (StatusCode::OK, serde_json::to_value(o).unwrap()))
    })
}

fn is_monitor(o: &DynamicObject) -> bool {
    matches!(o.types.as_ref().unwrap().kind.as_str(), "ServiceMonitor" | "PrometheusRule")
}

#[tokio::test]
async fn watched_monitors_are_read_only_when_their_cached_marker_moved() {
    let mut cp = clinic_platform("  {}\n");
    let children = live_children(&cp);
    assert_eq!(children.iter().filter(|c| is_monitor(c)).count(), 2, "a ServiceMonitor and a PrometheusRule");
    let live = Arc::new(Mutex::new(children.clone()));
    let ledger = Arc::new(Ledger::disabled());
    let monitor_calls = |calls: &Recorded| -> Vec<String> {
        let mut shown: Vec<String> = lines(calls)
            .into_iter()
            .filter(|l| l.contains("/servicemonitors/") || l.contains("/prometheusrules/"))
            .map(|l| l.rsplit_once("/namespaces/clinic-lyon/").map(|(m, p)| format!("{m} {p}")).unwrap_or(l))
            .collect();
        shown.sort();
        shown
    };
    let operator = |seeded: Seeded| {
        let (client, calls) = serving_monitors(live.clone());
        let ctx = Context::new(client, seeded.caches.clone(), Arc::new(Metrics::new()), None)
            .with_ledger(ledger.clone());
        (Arc::new(ctx), calls, seeded.optional)
    };
    let pass = |ctx: Arc<Context>, cp: ClinicPlatform| async move {
        reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp))), ctx).await.unwrap();
    };

    // The first check reads each once and finds it as declared.
    let (ctx, calls, _) = operator(seeded(children.clone(), secret_metadata(&cp)).await);
    pass(ctx.clone(), cp.clone()).await;
    assert_eq!(
        monitor_calls(&calls),
        [
            "GET /apis/monitoring.coreos.com/v1 prometheusrules/lyon-alerts",
            "GET /apis/monitoring.coreos.com/v1 servicemonitors/lyon-metrics"
        ]
    );
    // A change to the ClinicPlatform checks them again at once: their cache vouches for both.
    cp.metadata.annotations = Some(BTreeMap::from([("team".to_string(), "lyon-ops".to_string())]));
    calls.lock().unwrap().clear();
    pass(ctx, cp.clone()).await;
    assert_eq!(monitor_calls(&calls), Vec::<String>::new());

    // A restarted operator whose caches show the markers of that check: the ledger vouches.
    let (ctx, calls, mut writers) = operator(seeded(children.clone(), secret_metadata(&cp)).await);
    pass(ctx.clone(), cp.clone()).await;
    assert_eq!(monitor_calls(&calls), Vec::<String>::new(), "nothing moved while no operator ran");

    // Someone edits the ServiceMonitor: its watch delivers the change, and the next pass (within
    // the minute the last check would otherwise be reused) reads it and puts it back.
    let mut tampered =
        children.iter().find(|c| c.types.as_ref().unwrap().kind == "ServiceMonitor").unwrap().clone();
    tampered.data["spec"]["endpoints"] = json!([]);
    tampered.metadata.generation = Some(2);
    tampered.metadata.resource_version = Some("9".into());
    for object in live.lock().unwrap().iter_mut() {
        if object.types == tampered.types && object.metadata.name == tampered.metadata.name {
            *object = tampered.clone();
        }
    }
    let writer = &mut writers.iter_mut().find(|(ar, _)| ar.kind == "ServiceMonitor").unwrap().1;
    writer.apply_watcher_result(&Ok(Event::Apply(tampered)));
    calls.lock().unwrap().clear();
    pass(ctx.clone(), cp.clone()).await;
    assert_eq!(
        monitor_calls(&calls),
        [
            "GET /apis/monitoring.coreos.com/v1 servicemonitors/lyon-metrics",
            "PATCH /apis/monitoring.coreos.com/v1 servicemonitors/lyon-metrics"
        ]
    );

    // Someone deletes the PrometheusRule: its cache, in step, holds none, so it is applied
    // again without a read.
    let rule = children.iter().find(|c| c.types.as_ref().unwrap().kind == "PrometheusRule").unwrap().clone();
    live.lock().unwrap().retain(|o| o.types != rule.types);
    let writer = &mut writers.iter_mut().find(|(ar, _)| ar.kind == "PrometheusRule").unwrap().1;
    writer.apply_watcher_result(&Ok(Event::Delete(rule)));
    calls.lock().unwrap().clear();
    pass(ctx, cp.clone()).await;
    let rule_calls: Vec<String> =
        monitor_calls(&calls).into_iter().filter(|l| l.contains(" prometheusrules/")).collect();
    assert_eq!(rule_calls, ["PATCH /apis/monitoring.coreos.com/v1 prometheusrules/lyon-alerts"]);
}

#[tokio::test]
async fn a_deleted_child_is_applied_again() {
    let mut cp = clinic_platform("  {}\n");
    let children = live_children(&cp);
    let (_, calls) = run(&cp, seeded(children.clone(), secret_metadata(&cp)).await).await;
    cp.status = Some(serde_json::from_value(written_status(&calls)).unwrap());
    let without: Vec<DynamicObject> = children
        .into_iter()
        .filter(|c| {
            c.metadata.name.as_deref() != Some("lyon-mariadb")
                || c.types.as_ref().unwrap().kind != "NetworkPolicy"
        })
        .collect();
    let (result, calls) = run(&cp, seeded(without, secret_metadata(&cp)).await).await;
    result.unwrap();
    let mutating = child_writes(&calls);
    assert_eq!(mutating.len(), 1, "{mutating:?}");
    assert!(mutating[0].is("PATCH", "/networkpolicies/lyon-mariadb"));
}

#[tokio::test]
async fn an_edited_child_is_put_back_with_a_drift_event() {
    let mut cp = clinic_platform("  {}\n");
    let children = live_children(&cp);
    let (_, calls) = run(&cp, seeded(children.clone(), secret_metadata(&cp)).await).await;
    cp.status = Some(serde_json::from_value(written_status(&calls)).unwrap());
    let edited: Vec<DynamicObject> = children
        .into_iter()
        .map(|mut c| {
            if c.metadata.name.as_deref() == Some("lyon-gateway")
                && c.types.as_ref().unwrap().kind == "Service"
            {
                c.data["spec"]["ports"][0]["port"] = json!(8888);
                // Any write moves the resourceVersion: what makes the operator look again.
                c.metadata.resource_version = Some("7".into());
            }
            c
        })
        .collect();
    let (result, calls) = run(&cp, seeded(edited, secret_metadata(&cp)).await).await;
    result.unwrap();
    let mutating = child_writes(&calls);
    assert_eq!(mutating.len(), 1, "{mutating:?}");
    assert!(mutating[0].is("PATCH", "/services/lyon-gateway"));
    assert_eq!(mutating[0].body["spec"]["ports"][0]["port"], 80);
    let event = calls.iter().find(|c| c.is("POST", "/events")).expect("an event");
    assert_eq!(event.body["reason"], "DriftCorrected");
    assert_eq!(event.body["type"], "Warning");
    assert!(event.body["note"].as_str().unwrap().contains("spec.ports[0].port"));
    assert_eq!(event.body["related"]["name"], "lyon-gateway");
}

#[tokio::test]
async fn an_invalid_spec_writes_a_condition_and_an_event_and_nothing_else() {
    let cp = clinic_platform(
        "  openmrs:\n    backend:\n      resources:\n        requests: {cpu: \"8\"}\n        limits: {cpu: \"4\"}\n",
    );
    let (result, calls) = run(&cp, seeded(vec![], vec![]).await).await;
    let error = result.expect_err("an invalid spec is an error");
    assert!(error.contains("spec.openmrs.backend.resources.requests.cpu"), "{error}");
    let summary: Vec<String> =
        calls.iter().map(|c| format!("{} {}", c.method, c.path.split('?').next().unwrap())).collect();
    assert_eq!(
        summary,
        [
            "PATCH /apis/clinic.audioprothese.fr/v1alpha1/namespaces/clinic-lyon/clinicplatforms/lyon/status",
            "POST /apis/events.k8s.io/v1/namespaces/clinic-lyon/events",
        ]
    );
    let status = written_status(&calls);
    let degraded = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap();
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert_eq!(calls[1].body["type"], "Warning");
    assert_eq!(calls[1].body["reason"], "InvalidSpec");
}

#[tokio::test]
async fn a_paused_clinic_changes_no_child() {
    let cp = clinic_platform("  paused: true\n");
    let (result, calls) = run(&cp, seeded(vec![], vec![]).await).await;
    result.unwrap();
    assert!(calls.iter().all(|c| c.is("PATCH", "/status")), "{calls:?}");
    let status = written_status(&calls);
    let progressing =
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Progressing").unwrap();
    assert_eq!(progressing["reason"], "Paused");
}

/// An API server where the database volume exists and every other GET is a 404.
/// What a mock API server was asked: `METHOD path` and the request's body.
type Recorded = Arc<Mutex<Vec<(String, Value)>>>;

/// A mock API server whose answer to each request (`METHOD path`, method, body) `answer` gives.
fn scripted_api<F>(answer: F) -> (Client, Recorded)
where
    F: Fn(&str, &http::Method, Value) -> (StatusCode, Value) + Send + 'static,
{
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Recorded = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let line = format!("{} {}", request.method(), request.uri().path());
            let method = request.method().clone();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
            recorded.lock().unwrap().push((line.clone(), body.clone()));
            let (status, reply) = answer(&line, &method, body);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), calls)
}

/// [`scripted_api`] answering with `answer` where it has one; otherwise every GET is a 404 and
/// every write is answered with what it wrote.
fn answering_or_absent<F>(answer: F) -> (Client, Recorded)
where
    F: Fn(&str, &http::Method, &Value) -> Option<(StatusCode, Value)> + Send + 'static,
{
    scripted_api(move |line, method, body| match answer(line, method, &body) {
        Some(answered) => answered,
        None if method == "GET" => not_found(),
        None => echo(body),
    })
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

/// Writes answered with what they wrote.
fn echo(mut body: Value) -> (StatusCode, Value) {
    body["metadata"] = json!({"name": "lyon", "namespace": "clinic-lyon"});
    (StatusCode::OK, body)
}

/// The lines of what a mock API server was asked.
fn lines(calls: &Recorded) -> Vec<String> {
    calls.lock().unwrap().iter().map(|(line, _)| line.clone()).collect()
}

/// The database volume exists, no Secret does.
fn volume_without_secrets() -> (Client, Recorded) {
    answering_or_absent(|line, _, _| {
        line.contains("persistentvolumeclaims").then(|| {
            let meta = json!({"name": "data-lyon-mariadb-0", "namespace": "clinic-lyon"});
            (StatusCode::OK, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta}))
        })
    })
}

#[tokio::test]
async fn lost_credentials_are_never_regenerated_over_existing_data() {
    // The database volume exists but its Secret is gone: the mock answers the PVC GET with 200.
    let (client, calls) = volume_without_secrets();
    let cp = clinic_platform("  {}\n");
    let ctx =
        Arc::new(Context::new(client, seeded(vec![], vec![]).await.caches, Arc::new(Metrics::new()), None));
    let result = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp))), ctx).await;
    let error = result.expect_err("must not go on without credentials").to_string();
    assert!(error.contains("lyon-db-credentials") && error.contains("data-lyon-mariadb-0"), "{error}");
    // MariaDB's CA and certificate may be made (no data depends on them); no Secret is created
    // once the credentials were found missing.
    let calls = lines(&calls);
    let looked =
        calls.iter().position(|c| c.ends_with("/secrets/lyon-db-credentials")).expect("looked for it");
    assert!(
        !calls[looked..].iter().any(|c| c.starts_with("POST") && c.contains("/secrets")),
        "a Secret was generated: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("PATCH")
            && !c.contains("/status")
            && c != "PATCH /api/v1/namespaces/clinic-lyon"),
        "children applied: {calls:?}"
    );
}

const GENERATED: [&str; 4] =
    ["lyon-db-credentials", "lyon-mariadb-exporter", "lyon-db-encryption", "lyon-openmrs-admin"];

/// Every generated Secret already exists, but the cache does not hold it (it lags, or the
/// namespace was just restored): the API server answers the create with 409 and the Secret with
/// its metadata. The CA and the certificate it signs do not exist.
fn secrets_outside_the_cache() -> (Client, Recorded) {
    answering_or_absent(|line, method, body| {
        let name = line.rsplit('/').next().unwrap_or_default();
        let created = body["metadata"]["name"].as_str().unwrap_or_default();
        if method == "POST" && line.ends_with("/secrets") && GENERATED.contains(&created) {
            Some((
                StatusCode::CONFLICT,
                json!({"kind": "Status", "apiVersion": "v1", "code": 409, "reason": "AlreadyExists"}),
            ))
        } else if method == "GET" && line.contains("/secrets/") && GENERATED.contains(&name) {
            let meta = json!({"name": name, "namespace": "clinic-lyon", "uid": format!("uid-{name}")});
            Some((StatusCode::OK, json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta})))
        } else {
            None
        }
    })
}

#[tokio::test]
async fn a_secret_the_cache_does_not_hold_is_adopted_never_written_again() {
    let (client, calls) = secrets_outside_the_cache();
    let cp = clinic_platform("  {}\n");
    let ctx =
        Arc::new(Context::new(client, seeded(vec![], vec![]).await.caches, Arc::new(Metrics::new()), None));
    reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp))), ctx).await.expect("adopted, and on");
    let calls = calls.lock().unwrap().clone();
    for name in GENERATED {
        let path = format!("/api/v1/namespaces/clinic-lyon/secrets/{name}");
        let creates = calls
            .iter()
            .filter(|(l, b)| {
                l == "POST /api/v1/namespaces/clinic-lyon/secrets" && b["metadata"]["name"] == name
            })
            .count();
        assert_eq!(creates, 1, "{name}: one create, refused with 409");
        let read = calls.iter().position(|(l, _)| *l == format!("GET {path}")).expect("read after the 409");
        // Adopted: our labels by a merge patch that carries no data.
        let (_, patch) = calls[read..]
            .iter()
            .find(|(l, _)| *l == format!("PATCH {path}"))
            .unwrap_or_else(|| panic!("{name} not adopted: {calls:?}"));
        assert_eq!(patch["metadata"]["labels"]["app.kubernetes.io/managed-by"], "clinic-operator");
        assert!(patch.get("data").is_none() && patch.get("stringData").is_none(), "{patch}");
    }
}

#[test]
fn owner_reference_points_at_the_clinic() {
    let cp = clinic_platform("  {}\n");
    let clinic = model::validate(&cp).unwrap();
    let owner = clinic.owner.unwrap();
    assert_eq!(owner.uid, UID);
    assert_eq!(owner.kind, ClinicPlatform::kind(&()));
}

/// A dashboard in Grafana's namespace as another clinic (or anyone) holds it.
fn dashboard_held_by(cp: &ClinicPlatform, namespace_label: &str, instance: &str) -> DynamicObject {
    let clinic = model::validate(cp).unwrap();
    let mut theirs = desired::to_dynamic(&desired::monitoring::dashboard(&clinic).unwrap());
    let labels = theirs.metadata.labels.get_or_insert_with(Default::default);
    labels.insert("app.kubernetes.io/instance".into(), instance.into());
    labels.insert(desired::backup::CLINIC_NAMESPACE_LABEL.into(), namespace_label.into());
    theirs.metadata.uid = Some("0a1b2c3d-0000-4000-8000-000000000001".into());
    theirs
}

#[tokio::test]
async fn an_outside_name_held_by_another_clinic_is_never_taken_over() {
    let cp = clinic_platform("  monitoring:\n    dashboard:\n      namespace: monitoring\n");
    let theirs = dashboard_held_by(&cp, "clinic", "lyon-other");
    let path = object_path(&theirs).unwrap();
    let seeded = Seeded { live: vec![theirs], ..seeded(vec![], vec![]).await };
    let (result, calls) = run(&cp, seeded).await;
    result.unwrap();
    let touched: Vec<&Call> = calls.iter().filter(|c| c.mutating() && c.path.contains(&path)).collect();
    assert!(touched.is_empty(), "the other clinic's dashboard was written: {touched:?}");
    let status = written_status(&calls);
    let monitoring =
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "MonitoringReady").unwrap();
    assert_eq!(monitoring["reason"], "NameClash", "{monitoring}");
    assert!(monitoring["message"].as_str().unwrap().contains("clinic clinic/lyon-other"), "{monitoring}");
    assert_eq!(status["outsideObjects"], json!([]), "a clashing object is not recorded as the clinic's");
    let clash = calls.iter().find(|c| c.path.contains("/events") && c.body["reason"] == "NameClash");
    assert!(clash.is_some_and(|e| e.body["type"] == "Warning"), "no NameClash Warning event: {calls:?}");
}

#[tokio::test]
async fn a_moved_outside_object_is_removed_only_when_it_is_the_clinics() {
    // The dashboard went to `monitoring` before; the spec now keeps it in the clinic's namespace.
    let before = clinic_platform("  monitoring:\n    dashboard:\n      namespace: monitoring\n");
    let ours = dashboard_held_by(&before, "clinic-lyon", "lyon");
    let mut cp = clinic_platform("  {}\n");
    let recorded = json!({"outsideObjects": [
        {"kind": "ConfigMap", "namespace": "monitoring", "name": ours.metadata.name.clone().unwrap()},
        {"kind": "ConfigMap", "namespace": "grafana", "name": "clinic-lyon-lyon-4d703153-dashboard"},
    ]});
    cp.status = Some(serde_json::from_value(recorded).unwrap());
    let mut theirs = dashboard_held_by(&before, "clinic", "lyon-other");
    theirs.metadata.namespace = Some("grafana".into());
    let (ours_path, theirs_path) = (object_path(&ours).unwrap(), object_path(&theirs).unwrap());
    let seeded = Seeded { live: vec![ours, theirs], ..seeded(vec![], vec![]).await };
    let (result, calls) = run(&cp, seeded).await;
    result.unwrap();
    let deleted: Vec<&str> = calls.iter().filter(|c| c.method == "DELETE").map(|c| c.path.as_str()).collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].contains(&ours_path), "{deleted:?}");
    // Deleted by uid: an object made under that name since is not removed.
    let delete = calls.iter().find(|c| c.method == "DELETE").unwrap();
    assert_eq!(delete.body["preconditions"]["uid"], "0a1b2c3d-0000-4000-8000-000000000001");
    assert!(calls.iter().all(|c| !(c.mutating() && c.path.contains(&theirs_path))), "theirs was touched");
    assert_eq!(written_status(&calls)["outsideObjects"], json!([]));
}

/// Two clinics of one namespace with opposite `enforcePodSecurity` once flapped the labels
/// forever: an opted-out clinic (where the policy allows it) now never removes them.
#[tokio::test]
async fn an_opted_out_clinic_never_removes_the_pod_security_labels() {
    let cp = clinic_platform("  security:\n    enforcePodSecurity: false\n");
    let children = live_children(&cp);
    let seeded = seeded(children, secret_metadata(&cp)).await;
    let (client, log) = mock_api(seeded.live);
    let policy = clinic_operator::policy::Policy { allow_pod_security_opt_out: true, ..Default::default() };
    let ctx = Arc::new(
        Context::new(client, seeded.caches, Arc::new(Metrics::new()), None).with_policy(Arc::new(policy)),
    );
    let (result, calls) = run_with(&cp, &ctx, &log).await;
    result.unwrap();
    let namespace_writes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.mutating() && c.path.split('?').next() == Some("/api/v1/namespaces/clinic-lyon"))
        .collect();
    assert!(namespace_writes.is_empty(), "the namespace's labels were changed: {namespace_writes:?}");
    // The labels are still there, so Pod Security is enforced, and status says so.
    let status = written_status(&calls);
    let security =
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "SecurityEnforced").unwrap();
    assert_ne!(security["reason"], "PodSecurityOptOut", "{security}");
    // Under the default policy the same spec is refused, naming the field, and nothing is written.
    let (client, log) = mock_api(vec![]);
    let ctx = Arc::new(Context::new(client, seeded_empty().await, Arc::new(Metrics::new()), None));
    let (result, calls) = run_with(&cp, &ctx, &log).await;
    assert!(result.unwrap_err().contains("spec.security.enforcePodSecurity"));
    assert!(child_writes(&calls).is_empty(), "{calls:?}");
    assert_eq!(written_condition(&calls, "Degraded")["reason"], "NotAllowed");
}

async fn seeded_empty() -> Caches {
    seeded(vec![], vec![]).await.caches
}

/// Discovery that fails at deletion once read as "Velero absent": the finalizer went and the
/// Schedule stayed, backing up a deleted clinic's data. Now the finalizer stays, the reconcile is
/// retried, and `CleanupBlocked` (with the metric behind the alert) says why and how to let go.
#[tokio::test]
async fn a_discovery_error_at_deletion_keeps_the_finalizer() {
    let mut cp = clinic_platform("  {}\n");
    cp.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    cp.metadata.finalizers = Some(vec![clinic_operator::api::FINALIZER.to_string()]);
    let finalizer_patches = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| {
                c.method == "PATCH" && c.path.contains("/clinicplatforms/lyon") && !c.path.contains("/status")
            })
            .count()
    };
    let (client, log) = mock_api_failing(vec![], &["/apis/velero.io/v1"]);
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(client, seeded_empty().await, metrics.clone(), None));
    let result = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp.clone()))), ctx.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = log.lock().unwrap().clone();
    let error = result.expect_err("a deletion that cannot see Velero must not finish");
    assert!(error.to_string().contains("velero.io/v1"), "{error}");
    assert_eq!(finalizer_patches(&calls), 0, "the finalizer was released: {calls:?}");
    let blocked = written_condition(&calls, "CleanupBlocked");
    assert_eq!((blocked["status"].as_str(), blocked["reason"].as_str()), (Some("True"), Some("ReadFailed")));
    assert!(blocked["message"].as_str().unwrap().contains(clinic_operator::api::ABANDON_CLEANUP_ANNOTATION));
    assert!(
        metrics
            .encode()
            .contains("clinic_operator_clinic_cleanup_blocked{namespace=\"clinic-lyon\",name=\"lyon\"} 1"),
        "{}",
        metrics.encode()
    );
    assert!(calls.iter().any(|c| c.is("POST", "/events") && c.body["reason"] == "CleanupBlocked"));

    // Still failing, but the platform team let the clinic go: the finalizer is released, with a
    // Warning listing what is left to remove by hand.
    let mut abandoned = cp.clone();
    abandoned
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(clinic_operator::api::ABANDON_CLEANUP_ANNOTATION.into(), "true".into());
    let (client, log) = mock_api_failing(vec![], &["/apis/velero.io/v1"]);
    let ctx = Arc::new(Context::new(client, seeded_empty().await, metrics.clone(), None));
    reconcile::reconcile(Arc::new(DeserializeGuard(Ok(abandoned))), ctx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = log.lock().unwrap().clone();
    assert_eq!(finalizer_patches(&calls), 1, "{calls:?}");
    assert!(calls.iter().any(|c| c.is("POST", "/events") && c.body["reason"] == "CleanupAbandoned"));
    assert!(!metrics.encode().contains("clinic_operator_clinic_cleanup_blocked{"));

    // Once discovery answers (Velero absent), the finalizer goes.
    let (client, log) = mock_api(vec![]);
    let ctx = Arc::new(Context::new(client, seeded_empty().await, Arc::new(Metrics::new()), None));
    reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp))), ctx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let calls = log.lock().unwrap().clone();
    assert_eq!(finalizer_patches(&calls), 1, "{calls:?}");
}

/// The OpenMRS admin password is written into the database at its first start: a deleted admin
/// Secret regenerated over existing data was a password OpenMRS would not accept. It is guarded
/// like the database credentials.
#[tokio::test]
async fn a_lost_admin_password_is_never_regenerated_over_existing_data() {
    let cp = clinic_platform("  {}\n");
    let db_only: Vec<_> = secret_metadata(&cp)
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() == Some("lyon-db-credentials"))
        .collect();
    let (client, calls) = volume_without_secrets();
    let ctx =
        Arc::new(Context::new(client, seeded(vec![], db_only).await.caches, Arc::new(Metrics::new()), None));
    let error =
        reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp))), ctx).await.expect_err("no admin password");
    let error = error.to_string();
    assert!(error.contains("lyon-openmrs-admin") && error.contains("data-lyon-mariadb-0"), "{error}");
    // The exporter's Secret may be made (its account is reset from it at every start); no
    // Secret is created after the admin password was found missing.
    let calls = lines(&calls);
    let looked =
        calls.iter().position(|c| c.ends_with("/secrets/lyon-openmrs-admin")).expect("looked for it");
    assert!(
        !calls[looked..].iter().any(|c| c.starts_with("POST") && c.contains("/secrets")),
        "an admin password was generated: {calls:?}"
    );
}

/// Keys are guarded once the status records data encrypted with them; before (a database of an
/// older operator, never encrypted) its first keys are generated.
async fn encryption_keys_missing_over_existing_data(recorded: bool) -> (Result<(), String>, Vec<String>) {
    let mut cp = clinic_platform("  {}\n");
    if recorded {
        cp.status = Some(clinic_operator::api::ClinicPlatformStatus {
            database_encryption_secret: Some("lyon-db-encryption".into()),
            ..Default::default()
        });
    }
    let others: Vec<_> = secret_metadata(&cp)
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some("lyon-db-encryption"))
        .collect();
    let (client, calls) = volume_without_secrets();
    let ctx =
        Arc::new(Context::new(client, seeded(vec![], others).await.caches, Arc::new(Metrics::new()), None));
    let result = reconcile::reconcile(Arc::new(DeserializeGuard(Ok(cp))), ctx).await;
    let calls = lines(&calls);
    (result.map(|_| ()).map_err(|e| format!("{} {e}", e.reason())), calls)
}

#[tokio::test]
async fn lost_encryption_keys_are_never_regenerated_over_encrypted_data() {
    let (result, calls) = encryption_keys_missing_over_existing_data(true).await;
    let error = result.expect_err("must not go on without the keys");
    assert!(
        error.starts_with("EncryptionKeyLost")
            && error.contains("lyon-db-encryption")
            && error.contains("data-lyon-mariadb-0"),
        "{error}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("POST") && c.contains("/secrets")),
        "keys generated: {calls:?}"
    );

    let (result, calls) = encryption_keys_missing_over_existing_data(false).await;
    result.expect("an unencrypted database gets its first keys");
    // No data was encrypted with any keys: they are created, without a read first.
    assert!(!calls.iter().any(|c| c.ends_with("/secrets/lyon-db-encryption")), "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("POST") && c.ends_with("/secrets")), "{calls:?}");
}

/// `deletionPolicy: Delete` is not in force until the confirmation annotation names the
/// object's uid: the status says what a deletion would do, and an event says how to confirm.
#[tokio::test]
async fn an_unconfirmed_delete_policy_is_reported_and_keeps_the_data() {
    let cp = clinic_platform("  deletionPolicy: Delete\n  backup:\n    deleteWithClinic: true\n");
    let (result, calls) = run(&cp, seeded(vec![], vec![]).await).await;
    result.unwrap();
    assert_eq!(written_status(&calls)["onDeletion"], json!({"data": "Retain", "backupsExpire": false}));
    let note = calls
        .iter()
        .find(|c| c.is("POST", "/events") && c.body["reason"] == "DeletionNotConfirmed")
        .map(|c| c.body["note"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no DeletionNotConfirmed event: {calls:?}"));
    assert!(note.contains(clinic_operator::api::CONFIRM_DELETION_ANNOTATION), "{note}");
    assert!(note.contains(cp.metadata.uid.as_deref().unwrap()), "{note}");

    let mut confirmed = cp.clone();
    confirmed
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(clinic_operator::api::CONFIRM_DELETION_ANNOTATION.into(), cp.metadata.uid.clone().unwrap());
    let (result, calls) = run(&confirmed, seeded(vec![], vec![]).await).await;
    result.unwrap();
    assert_eq!(written_status(&calls)["onDeletion"], json!({"data": "Delete", "backupsExpire": true}));
    assert!(!calls.iter().any(|c| c.is("POST", "/events") && c.body["reason"] == "DeletionNotConfirmed"));
}

/// The MariaDB image of the StatefulSet the pass applied, if it applied one.
fn applied_database_image(calls: &[Call]) -> Option<String> {
    calls.iter().rev().find(|c| c.is("PATCH", "/statefulsets/lyon-mariadb")).map(|c| {
        c.body["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string()
    })
}

/// A new MariaDB runs `mariadb-upgrade` over the data: it passes the upgrade gate like an
/// OpenMRS image (here without Velero, so it waits), and an older one is refused outright, even
/// with the gate skipped, since MariaDB cannot read newer data files back.
#[tokio::test]
async fn a_mariadb_change_is_gated_and_a_downgrade_refused() {
    let running = clinic_platform("  database:\n    version: '10.11'\n");
    let live = || live_children(&running);
    for (spec, reason) in [
        ("  database:\n    version: '11.4'\n", "UpgradeNeedsBackup"),
        ("  database:\n    version: '10.6'\n", "DatabaseDowngrade"),
        ("  database:\n    version: '10.6'\n  backup:\n    upgradeGate: Skip\n", "DatabaseDowngrade"),
    ] {
        let cp = clinic_platform(spec);
        let (result, calls) = run(&cp, seeded(live(), secret_metadata(&cp)).await).await;
        let degraded = written_condition(&calls, "Degraded");
        assert_eq!(degraded["reason"], reason, "{spec}: {degraded}");
        assert!(result.is_ok() || reason != "UpgradeNeedsBackup", "{result:?}");
        if let Some(image) = applied_database_image(&calls) {
            assert_eq!(image, "docker.io/library/mariadb:10.11", "{spec}: the database image moved");
        }
    }
    // The recorded version is a witness too: a status that says 11.4 ran refuses 10.11.
    let mut cp = clinic_platform("  database:\n    version: '10.11'\n");
    cp.status = Some(clinic_operator::api::ClinicPlatformStatus {
        versions: Some(clinic_operator::api::ComponentVersions {
            openmrs: None,
            database: Some("11.4".into()),
        }),
        ..Default::default()
    });
    let (_, calls) = run(&cp, seeded(live(), secret_metadata(&cp)).await).await;
    assert_eq!(written_condition(&calls, "Degraded")["reason"], "DatabaseDowngrade");
    // Skipped gate, newer version: it moves.
    let cp = clinic_platform("  database:\n    version: '11.4'\n  backup:\n    upgradeGate: Skip\n");
    let (result, calls) = run(&cp, seeded(live(), secret_metadata(&cp)).await).await;
    result.unwrap();
    assert_eq!(applied_database_image(&calls).as_deref(), Some("docker.io/library/mariadb:11.4"));
}

/// `status.versions` reports what runs, not what the spec asks for.
#[tokio::test]
async fn versions_report_what_runs() {
    let running = clinic_platform("  database:\n    version: '10.11'\n");
    let cp = clinic_platform("  database:\n    version: '11.4'\n");
    let (_, calls) = run(&cp, seeded(live_children(&running), secret_metadata(&cp)).await).await;
    assert_eq!(written_status(&calls)["versions"], json!({"openmrs": "3.7.x", "database": "10.11"}));
}

/// An initialised database keeps the passwords it was set up with: pointing
/// `credentialsSecretRef` at another Secret is refused, until a person says the passwords moved.
#[tokio::test]
async fn a_credentials_switch_over_initialised_data_is_refused() {
    let initial = clinic_platform("  {}\n");
    let with_record = |spec: &str, annotations: &[(&str, &str)]| {
        let mut cp = clinic_platform(spec);
        cp.status = Some(clinic_operator::api::ClinicPlatformStatus {
            database_credentials_secret: Some("lyon-db-credentials".into()),
            ..Default::default()
        });
        for (k, v) in annotations {
            cp.metadata.annotations.get_or_insert_default().insert(k.to_string(), v.to_string());
        }
        cp
    };
    // The record is made while the database exists.
    let (_, calls) = run(&initial, seeded(live_children(&initial), secret_metadata(&initial)).await).await;
    assert_eq!(written_status(&calls)["databaseCredentialsSecret"], "lyon-db-credentials");

    let switched = with_record("  database:\n    credentialsSecretRef: vault-synced\n", &[]);
    let (result, calls) =
        run(&switched, seeded(live_children(&initial), secret_metadata(&initial)).await).await;
    let error = result.unwrap_err();
    assert!(error.contains("spec.database.credentialsSecretRef"), "{error}");
    assert!(child_writes(&calls).is_empty(), "{calls:?}");
    let degraded = written_condition(&calls, "Degraded");
    assert_eq!(degraded["reason"], "CredentialsSwitch");
    assert_eq!(written_status(&calls)["databaseCredentialsSecret"], "lyon-db-credentials");

    let moved = with_record(
        "  database:\n    credentialsSecretRef: vault-synced\n",
        &[(clinic_operator::api::CREDENTIALS_MOVED_ANNOTATION, "vault-synced")],
    );
    let (result, calls) = run(&moved, seeded(live_children(&initial), secret_metadata(&initial)).await).await;
    result.unwrap();
    assert_eq!(written_status(&calls)["databaseCredentialsSecret"], "vault-synced");
}

/// A converged clinic whose database certificate, signed by the CA Secret it holds, ends
/// `days_left` days from now.
async fn certificate_case(days_left: i64, signed_by_the_ca: bool) -> (Vec<Call>, String) {
    certificate_case_cached(days_left, signed_by_the_ca, true).await
}

/// [`certificate_case`], the two Secrets in the caches or only on the API server (the caches
/// lagging behind the pass that wrote them).
async fn certificate_case_cached(
    days_left: i64,
    signed_by_the_ca: bool,
    cached: bool,
) -> (Vec<Call>, String) {
    use clinic_operator::desired::internal_tls;
    let cp = clinic_platform("  {}\n");
    let clinic = model::validate(&cp).unwrap();
    let now = jiff::Timestamp::now();
    let (ca_cert, ca_key) = internal_tls::new_ca(&clinic, now).unwrap();
    let fingerprint = internal_tls::fingerprint(&ca_cert).unwrap();
    let not_after = (now + jiff::SignedDuration::from_hours(24 * days_left)).to_string();
    let children = live_children_with_certificate(&cp, &not_after);
    let signer = if signed_by_the_ca { fingerprint.clone() } else { "another-ca".to_string() };
    let labels = clinic.labels(model::Component::Platform);
    let mut secrets: Vec<_> = secret_metadata(&cp)
        .into_iter()
        .filter(|s| !s.metadata.name.as_deref().unwrap().starts_with("lyon-db-tls"))
        .filter(|s| s.metadata.name.as_deref() != Some("lyon-db-ca"))
        .collect();
    let ca_meta = secret_meta(
        "lyon-db-ca".into(),
        labels.clone(),
        &[(internal_tls::CA_FINGERPRINT_ANNOTATION, &fingerprint)],
    );
    let mut tls = secret_meta(
        "lyon-db-tls".into(),
        labels,
        &[
            (internal_tls::CA_FINGERPRINT_ANNOTATION, &signer),
            (internal_tls::NOT_AFTER_ANNOTATION, &not_after),
        ],
    );
    tls.metadata.resource_version = Some("41".into());
    let tls_on_server: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": tls.metadata.clone(), "type": "kubernetes.io/tls",
    }))
    .unwrap();
    if cached {
        secrets.push(ca_meta);
        secrets.push(tls);
    }
    let mut seeded = seeded(children, secrets).await;
    let ca: DynamicObject = serde_json::from_value(
        serde_json::to_value(internal_tls::ca_secret(&clinic, &ca_cert, &ca_key)).unwrap(),
    )
    .unwrap();
    seeded.live.push(ca);
    if !cached {
        seeded.live.push(tls_on_server);
    }
    let (result, calls) = run(&cp, seeded).await;
    result.unwrap();
    (calls, not_after)
}

#[tokio::test]
async fn a_current_database_certificate_is_left_alone() {
    let (calls, _) = certificate_case(60, true).await;
    assert!(
        !calls.iter().any(|c| c.path.contains("/secrets")),
        "{:?}",
        calls.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    assert!(!calls.iter().any(|c| c.path.contains("/statefulsets/lyon-mariadb") && c.mutating()));
    // The caches not yet holding what the pass before wrote: read, and still left alone.
    let (calls, _) = certificate_case_cached(60, true, false).await;
    let secrets: Vec<String> = calls
        .iter()
        .filter(|c| c.path.contains("/secrets"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(secrets.iter().all(|c| c.starts_with("GET")), "{secrets:?}");
    assert!(!calls.iter().any(|c| c.path.contains("/statefulsets/lyon-mariadb") && c.mutating()));
}

#[tokio::test]
async fn a_due_or_foreign_database_certificate_is_issued_again_and_rolls_mariadb() {
    for (days_left, signed_by_the_ca) in [(20, true), (60, false)] {
        let (calls, old_not_after) = certificate_case(days_left, signed_by_the_ca).await;
        let case = format!("{days_left} days left, signed by the CA: {signed_by_the_ca}");
        let writes: Vec<&Call> =
            calls.iter().filter(|c| c.path.contains("/secrets") && c.mutating()).collect();
        assert_eq!(writes.len(), 1, "{case}: {writes:?}");
        let renewal = writes[0];
        // A merge patch of the certificate Secret only, on the version the cache saw.
        assert!(renewal.is("PATCH", "/secrets/lyon-db-tls"), "{case}: {}", renewal.path);
        assert_eq!(renewal.body["metadata"]["resourceVersion"], "41", "{case}");
        let not_after =
            renewal.body["metadata"]["annotations"]["clinic.audioprothese.fr/not-after"].as_str().unwrap();
        assert_ne!(not_after, old_not_after, "{case}");
        assert!(renewal.body["data"]["tls.crt"].is_string() && renewal.body["data"]["tls.key"].is_string());
        // MariaDB reads its certificate at start: its pod template takes the new one.
        let mariadb = calls
            .iter()
            .find(|c| c.is("PATCH", "/statefulsets/lyon-mariadb"))
            .unwrap_or_else(|| panic!("{case}: MariaDB not rolled"));
        assert_eq!(
            mariadb.body["spec"]["template"]["metadata"]["annotations"]["clinic.audioprothese.fr/db-tls-not-after"],
            not_after,
            "{case}"
        );
        assert_eq!(written_status(&calls)["databaseCertificate"]["notAfter"], not_after, "{case}");
    }
}
