//! End-to-end scenarios against a real kube-apiserver + controller-manager + scheduler + kwok.
//!
//! One control plane and one operator process serve every scenario (one namespace each), so the
//! suite stays short. The operator runs with the chart's ClusterRole through a ServiceAccount
//! token, so a missing permission fails a scenario and an excess one fails `rbac_is_least_privilege`.
//! Every wait is bounded.

mod mutations;
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clinic_operator_e2e::cluster::{self, ControlPlane};
use clinic_operator_e2e::operator::{self, OperatorProcess};
use clinic_operator_e2e::workspace_root;
use libtest_mimic::Arguments;
use mutations::Mutation;
use serde_json::{Value, json};
use support::*;

/// Where a scenario can run: `Local` needs the operator process or the local control plane's
/// keys (restart, logs, service-account kubeconfigs, extra control planes); `Any` also runs
/// against an attached cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runs {
    Local,
    Any,
}

// ---------------------------------------------------------------------------------------------
// Scenarios

fn crd_installs(env: &Env) -> Result<()> {
    let crd = env.json(&["get", "crd", "clinicplatforms.clinic.audioprothese.fr"])?;
    let conditions = crd["status"]["conditions"].as_array().context("CRD has no conditions")?;
    let has = |t: &str, s: &str| conditions.iter().any(|c| c["type"] == t && c["status"] == s);
    ensure!(has("Established", "True"), "CRD not established: {conditions:?}");
    ensure!(has("NamesAccepted", "True"), "CRD names not accepted: {conditions:?}");
    ensure!(!has("NonStructuralSchema", "True"), "CRD schema is not structural: {conditions:?}");
    let explain = env.kubectl(&["explain", "clinicplatform.spec.openmrs.backend.replicas"])?;
    ensure!(explain.contains("clustering"), "kubectl explain lacks the field doc:\n{explain}");
    Ok(())
}

/// Object for object, wherever it lives (the Schedule in Velero's namespace, a dashboard in
/// Grafana's): every field `render` prints for `file` is what the cluster holds. Secret values
/// are placeholders in `render`, generated on the cluster.
fn render_matches_the_cluster(env: &Env, file: &str, namespace: &str) -> Result<()> {
    let mut problems = Vec::new();
    for object in rendered_objects(file, namespace)? {
        let (kind, api_version) =
            (object["kind"].as_str().unwrap_or(""), object["apiVersion"].as_str().unwrap_or(""));
        let (namespace, name) = (
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap_or(""),
        );
        let group = api_version.split_once('/').map(|(g, _)| format!(".{g}")).unwrap_or_default();
        let live = match env.json(&["-n", namespace, "get", &format!("{}{group}", kind.to_lowercase()), name])
        {
            Ok(live) => live,
            Err(e) => {
                problems.push(format!("{kind} {namespace}/{name}: not on the cluster: {e}"));
                continue;
            }
        };
        let mut expected = object.clone();
        if kind == "Secret" {
            expected.as_object_mut().map(|o| (o.remove("data"), o.remove("stringData")));
        }
        let mut found = Vec::new();
        differences(&expected, &live, &format!("{kind} {namespace}/{name}"), &mut found);
        problems.extend(found);
    }
    ensure!(problems.is_empty(), "{file}: render and the cluster differ:\n{}", problems.join("\n"));
    Ok(())
}

fn minimal_example_converges(env: &Env) -> Result<()> {
    // examples/minimal.yaml brings its own namespace: applied alone, as the docs show.
    env.kubectl(&["apply", "-f", &workspace_root().join("examples/minimal.yaml").display().to_string()])?;
    env.wait_ready("clinic-minimal", "clinic-minimal", wait())?;
    let expected = rendered_children("examples/minimal.yaml", "clinic-minimal")?;
    let actual = env.children("clinic-minimal", "clinic-minimal")?;
    let missing: Vec<_> = expected.difference(&actual).collect();
    ensure!(missing.is_empty(), "children missing after Ready: {missing:?}");
    let unexpected: Vec<_> = actual.difference(&expected).collect();
    ensure!(unexpected.is_empty(), "children that render does not show: {unexpected:?}");
    render_matches_the_cluster(env, "examples/minimal.yaml", "clinic-minimal")?;
    for c in ["DatabaseReady", "OpenMRSReady", "SecurityEnforced", "MonitoringReady"] {
        let cond = env.condition("clinic-minimal", "clinic-minimal", c)?.context("condition missing")?;
        ensure!(cond["status"] == "True", "{c} is not True: {cond}");
    }
    let cp = env.json(&["-n", "clinic-minimal", "get", "clinicplatform", "clinic-minimal"])?;
    ensure!(
        cp["status"]["observedGeneration"] == cp["metadata"]["generation"],
        "observedGeneration behind: {}",
        cp["status"]
    );
    ensure!(
        cp["status"]["url"].as_str().is_some_and(|u| u.contains("clinic-minimal-gateway")),
        "no url: {}",
        cp["status"]
    );
    Ok(())
}

fn restricted_namespace_admits_every_pod(env: &Env) -> Result<()> {
    env.namespace("e2e-restricted")?;
    env.clinic("e2e-restricted", "psa", "  openmrs:\n    locale: fr\n")?;
    env.wait_ready("e2e-restricted", "psa", wait())?;
    let events =
        env.json(&["-n", "e2e-restricted", "get", "events", "--field-selector", "reason=FailedCreate"])?;
    let failed = events["items"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(failed == 0, "pods were refused: {}", events["items"]);
    // mariadb + backend + 2 frontend + 2 gateway (the autoscalers bring frontend and gateway to
    // their minimum of 2).
    eventually("6 running pods", Duration::from_secs(90), || {
        let pods = env.json(&["-n", "e2e-restricted", "get", "pods", "-l", &format!("{INSTANCE}=psa")])?;
        Ok(pods["items"].as_array().map(|p| p.iter().filter(|p| p["status"]["phase"] == "Running").count())
            == Some(6))
    })?;
    let events =
        env.json(&["-n", "e2e-restricted", "get", "events", "--field-selector", "reason=FailedCreate"])?;
    ensure!(events["items"].as_array().is_none_or(Vec::is_empty), "pods were refused: {}", events["items"]);
    Ok(())
}

fn drift_is_put_back(env: &Env) -> Result<()> {
    let ns = "e2e-drift";
    env.namespace(ns)?;
    env.clinic(ns, "drift", "  openmrs: {}\n")?;
    env.wait_ready(ns, "drift", wait())?;

    // A deleted child comes back.
    env.kubectl(&["-n", ns, "delete", "service", "drift-frontend", "--wait=true"])?;
    eventually("deleted Service re-created", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", ns, "get", "service", "drift-frontend"]).is_ok())
    })?;

    // A widened NetworkPolicy rule is narrowed again.
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "networkpolicy",
        "drift-mariadb",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/ingress/0/from/-","value":{"namespaceSelector":{}}}]"#,
    ])?;
    eventually("NetworkPolicy rule put back", Duration::from_secs(30), || {
        let np = env.json(&["-n", ns, "get", "networkpolicy", "drift-mariadb"])?;
        Ok(np["spec"]["ingress"][0]["from"].as_array().map(Vec::len) == Some(1))
    })?;

    // A weakened container securityContext is hardened again.
    env.kubectl(&["-n", ns, "patch", "deployment", "drift-gateway", "--type=json", "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem","value":false}]"#])?;
    eventually("securityContext put back", Duration::from_secs(30), || {
        let d = env.json(&["-n", ns, "get", "deployment", "drift-gateway"])?;
        Ok(d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
            == true)
    })?;

    // A changed Service port is changed back.
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "service",
        "drift-gateway",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":8081}]"#,
    ])?;
    eventually("Service port put back", Duration::from_secs(30), || {
        let s = env.json(&["-n", ns, "get", "service", "drift-gateway"])?;
        Ok(s["spec"]["ports"].as_array().map(Vec::len) == Some(1) && s["spec"]["ports"][0]["port"] == 80)
    })?;

    // A changed image is changed back.
    env.kubectl(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/drift-frontend",
        "frontend=docker.io/library/nginx:latest",
    ])?;
    eventually("image put back", Duration::from_secs(30), || {
        let d = env.json(&["-n", ns, "get", "deployment", "drift-frontend"])?;
        Ok(d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.contains("openmrs-reference-application-3-frontend")))
    })?;

    // A raised autoscaling ceiling is lowered again. The API server gives HPAs no generation:
    // the operator tells this edit from the controller's status writes by who wrote what.
    env.merge_patch(ns, "horizontalpodautoscaler", "drift-gateway", r#"{"spec":{"maxReplicas":50}}"#)?;
    eventually("autoscaling bounds put back", Duration::from_secs(30), || {
        let hpa = env.json(&["-n", ns, "get", "horizontalpodautoscaler", "drift-gateway"])?;
        Ok(hpa["spec"]["maxReplicas"] == 5)
    })?;

    // A removed label comes back.
    env.kubectl(&["-n", ns, "label", "configmap", "drift-gateway-nginx", "app.kubernetes.io/part-of-"])?;
    eventually("label put back", Duration::from_secs(30), || {
        let cm = env.json(&["-n", ns, "get", "configmap", "drift-gateway-nginx"])?;
        Ok(cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "openmrs")
    })?;

    // The namespace's Pod Security label comes back.
    env.kubectl(&["label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged", "--overwrite"])?;
    eventually("Pod Security label put back", Duration::from_secs(30), || {
        let n = env.json(&["get", "namespace", ns])?;
        Ok(n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted")
    })?;

    // Fields of the pod template the operator never needed to set, which widen what a pod may
    // reach: a host namespace, an extra container with a hostPath volume. Put back too.
    env.merge_patch(
        ns,
        "statefulset",
        "drift-mariadb",
        r#"{"spec":{"template":{"spec":{"hostNetwork":true,"hostPID":true}}}}"#,
    )?;
    eventually("host namespaces put back", Duration::from_secs(30), || {
        let s = env.json(&["-n", ns, "get", "statefulset", "drift-mariadb"])?;
        let pod = &s["spec"]["template"]["spec"];
        Ok(pod["hostNetwork"] != true && pod["hostPID"] != true)
    })?;
    env.kubectl(&["-n", ns, "patch", "deployment", "drift-frontend", "--type=json", "-p",
        r#"[{"op":"add","path":"/spec/template/spec/volumes/-","value":{"name":"host","hostPath":{"path":"/"}}},
            {"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"shell","image":"busybox","volumeMounts":[{"name":"host","mountPath":"/host"}]}}]"#])?;
    eventually("added container and hostPath volume removed", Duration::from_secs(30), || {
        let d = env.json(&["-n", ns, "get", "deployment", "drift-frontend"])?;
        let pod = &d["spec"]["template"]["spec"];
        let names = |key: &str| -> Vec<String> {
            pod[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        };
        Ok(!names("containers").contains(&"shell".to_string())
            && !names("volumes").contains(&"host".to_string()))
    })?;

    // Events are published after the write that corrected the drift.
    eventually("a DriftCorrected event per corrected child", Duration::from_secs(30), || {
        let events = env.json(&["-n", ns, "get", "events", "--field-selector", "reason=DriftCorrected"])?;
        let messages: Vec<String> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect();
        Ok([
            "Service drift-frontend was deleted outside the operator",
            "NetworkPolicy drift-mariadb",
            "Deployment drift-gateway",
            "Service drift-gateway",
            "Deployment drift-frontend",
            "ConfigMap drift-gateway-nginx",
            "HorizontalPodAutoscaler drift-gateway: spec.maxReplicas",
            "StatefulSet drift-mariadb: spec.template.spec.host",
        ]
        .iter()
        .all(|child| messages.iter().any(|m| m.starts_with(child))))
    })?;
    // Counted as drift, the deletion as much as the edits (where the operator's endpoint is ours).
    if env.operator.is_some() {
        let (_, metrics) = env.operator().http_get("/metrics")?;
        let corrections = |kind: &str| {
            metrics
                .lines()
                .find(|l| {
                    l.starts_with(&format!("clinic_operator_drift_corrections_total{{kind=\"{kind}\"}}"))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        ensure!(
            corrections("Service") >= 2.0,
            "the deleted and the edited Service are not both counted:\n{metrics}"
        );
    }
    Ok(())
}

/// A pod template Pod Security refuses (here a host namespace patched in while the clinic is
/// paused, so the operator leaves it) stops the database: the clinic says Degraded with the
/// controller's own words, and recovers once the template is put back.
fn refused_pods_degrade_the_clinic(env: &Env) -> Result<()> {
    let ns = "e2e-refused";
    env.namespace(ns)?;
    env.clinic(ns, "refused", "  {}\n")?;
    env.wait_ready(ns, "refused", wait())?;
    env.merge_patch(ns, "clinicplatform", "refused", r#"{"spec":{"paused":true}}"#)?;
    env.merge_patch(
        ns,
        "statefulset",
        "refused-mariadb",
        r#"{"spec":{"template":{"spec":{"hostNetwork":true}}}}"#,
    )?;
    eventually("Degraded=True with PodsRefused", Duration::from_secs(90), || {
        env.poke(ns, "refused")?;
        Ok(env
            .condition(ns, "refused", "Degraded")?
            .is_some_and(|c| c["status"] == "True" && c["reason"] == "PodsRefused"))
    })?;
    let degraded = env.condition(ns, "refused", "Degraded")?.context("no Degraded")?;
    let message = degraded["message"].as_str().unwrap_or_default();
    ensure!(message.contains("refused-mariadb") && message.contains("forbidden"), "{degraded}");
    ensure!(
        env.condition(ns, "refused", "Ready")?.is_some_and(|c| c["status"] == "False"),
        "a clinic whose database cannot start reads Ready"
    );
    env.merge_patch(ns, "clinicplatform", "refused", r#"{"spec":{"paused":false}}"#)?;
    eventually("template put back and the clinic Ready again", Duration::from_secs(120), || {
        Ok(env.condition(ns, "refused", "Degraded")?.is_some_and(|c| c["status"] == "False")
            && env.condition(ns, "refused", "Ready")?.is_some_and(|c| c["status"] == "True"))
    })?;
    Ok(())
}

/// Specs the API server must refuse, with the field its message must name (the same fixture
/// the unit tests check offline).
fn invalid_specs() -> Result<Vec<(String, String)>> {
    let path = workspace_root().join("operator/tests/fixtures/invalid-specs.yaml");
    let cases: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    cases
        .as_sequence()
        .context("the fixture is a list")?
        .iter()
        .map(|c| Ok((serde_json::to_string(&c["spec"])?, c["field"].as_str().context("field")?.to_string())))
        .collect()
}

fn invalid_specs_are_rejected(env: &Env) -> Result<()> {
    env.namespace("e2e-invalid")?;
    let mut problems = Vec::new();
    for (i, (spec, field)) in invalid_specs()?.iter().enumerate() {
        let yaml = format!(
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: invalid-{i}\n  namespace: e2e-invalid\nspec: {spec}\n"
        );
        let path = env.plane.dir.join(format!("invalid-{i}.yaml"));
        std::fs::write(&path, &yaml)?;
        match env.kubectl(&["apply", "--dry-run=server", "-f", &path.display().to_string()]) {
            Ok(out) => problems.push(format!("accepted spec #{i} ({field}): {out}")),
            Err(e) if e.to_string().contains(field) => {}
            Err(e) => problems.push(format!("spec #{i}: message does not name {field}: {e}")),
        }
    }
    // A name so long that child names would exceed DNS label limits.
    let path = env.plane.dir.join("invalid-name.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: {}\n  namespace: e2e-invalid\nspec: {{}}\n",
            "x".repeat(45)
        ),
    )?;
    match env.kubectl(&["apply", "--dry-run=server", "-f", &path.display().to_string()]) {
        Ok(out) => problems.push(format!("accepted a 45-character name: {out}")),
        Err(e) if e.to_string().contains("metadata.name") => {}
        Err(e) => problems.push(format!("long name: message does not name metadata.name: {e}")),
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// `render` and the API server (`--dry-run=server`, strict field validation, as `kubectl apply`)
/// give the same verdict on every mutation generated from the CRD schema, and both name the
/// broken field; each mutation's twin (a valid value in the same place) is accepted by both.
fn render_and_the_api_server_agree_on_every_mutation(env: &Env) -> Result<()> {
    use futures::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
    let ns = "e2e-mutations";
    env.namespace(ns)?;
    let schema = clinic_operator::api::schema::openapi_schema().context("the CRD has a schema")?;
    let all = mutations::generate(&schema);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let api: Api<DynamicObject> = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&env.plane.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let resource = ApiResource::erase::<clinic_operator::api::ClinicPlatform>(&());
        anyhow::Ok(Api::namespaced_with(kube::Client::try_from(config)?, ns, &resource))
    })?;
    let params = PatchParams::apply("e2e-mutations").dry_run().validation_strict();
    let document = |name: &str, spec: &Value| {
        serde_json::json!({
            "apiVersion": "clinic.audioprothese.fr/v1alpha1", "kind": "ClinicPlatform",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        })
    };
    // Every server verdict first, sixteen requests at a time: the API server is the slow half.
    let ask = |name: String, spec: Value| {
        let (api, params) = (api.clone(), params.clone());
        let object = document(&name, &spec);
        async move {
            api.patch(&name, &params, &Patch::Apply(object)).await.map(drop).map_err(|e| match e {
                kube::Error::Api(status) => status.message,
                other => format!("request failed: {other}"),
            })
        }
    };
    let verdicts: Vec<(Result<(), String>, Result<(), String>)> = runtime.block_on(
        futures::stream::iter(all.iter().map(|m| {
            let (broken, twin) =
                (ask(m.name.clone(), m.broken.clone()), ask(m.twin_name.clone(), m.twin.clone()));
            async move { futures::join!(broken, twin) }
        }))
        .buffered(8)
        .collect(),
    );
    let unrestricted = clinic_operator::policy::Policy::unrestricted();
    let render = |name: &str, spec: &Value| -> Result<(), String> {
        // The schema and CEL half of `render`: the API server knows no platform policy.
        clinic_operator::render::render_with(&document(name, spec).to_string(), ns, &unrestricted)
            .map(drop)
            .map_err(|e| e.to_string())
    };

    let mut problems = Vec::new();
    let mut refused_by_both = 0;
    // CEL rules with candidates, and those a candidate broke on the server.
    let (mut cel_rules, mut cel_broken) = (BTreeSet::new(), BTreeSet::new());
    for (mutation, (server_broken, server_twin)) in all.iter().zip(verdicts) {
        let Mutation { rule, field, name, twin_name, broken, twin, cel_message } = mutation;
        if let Some(message) = cel_message {
            // A candidate value: it counts if the server refuses it with this rule's message.
            cel_rules.insert(rule.clone());
            match &server_broken {
                Err(e) if e.contains(message.as_str()) => {}
                _ => continue,
            }
            cel_broken.insert(rule.clone());
        }
        if let Err(e) = server_twin {
            problems.push(format!("{rule}: the server refuses the valid twin: {e}\n  twin: {twin}"));
            continue;
        }
        if let Err(e) = render(twin_name, twin) {
            problems.push(format!(
                "{rule}: render refuses the valid twin, the server accepts it: {e}\n  twin: {twin}"
            ));
            continue;
        }
        match (server_broken, render(name, broken)) {
            (Err(s), Err(r)) if s.contains(field.as_str()) && r.contains(field.as_str()) => {
                refused_by_both += 1
            }
            (Err(s), Err(r)) => problems
                .push(format!("{rule}: both refuse, not both name {field}:\n  server: {s}\n  render: {r}")),
            (Err(s), Ok(())) => problems
                .push(format!("{rule}: render accepts what the server refuses: {s}\n  spec: {broken}")),
            (Ok(()), Err(r)) => problems
                .push(format!("{rule}: render refuses what the server accepts: {r}\n  spec: {broken}")),
            (Ok(()), Ok(())) => {
                problems.push(format!("{rule}: both accept the mutation (generator bug)\n  spec: {broken}"))
            }
        }
    }
    for rule in cel_rules.difference(&cel_broken) {
        problems.push(format!("{rule}: no candidate value breaks this CEL rule on the server"));
    }
    eprintln!(
        "mutations: {} generated, {refused_by_both} refused by both with the field named; {} of {} CEL rules broken",
        all.len(),
        cel_broken.len(),
        cel_rules.len()
    );
    ensure!(problems.is_empty(), "{} disagreements:\n{}", problems.len(), problems.join("\n"));
    Ok(())
}

fn spec_invalid_beyond_schema_degrades_without_writes(env: &Env) -> Result<()> {
    let ns = "e2e-degraded";
    env.namespace(ns)?;
    // Passes the schema, but requests exceed limits: only `validate` can tell.
    env.clinic(
        ns,
        "bad",
        "  openmrs:\n    backend:\n      resources:\n        requests: {cpu: \"8\", memory: 2Gi}\n        limits: {cpu: \"4\", memory: 4Gi}\n",
    )?;
    env.wait_condition(ns, "bad", ("Degraded", "True", "InvalidSpec"), Duration::from_secs(60))?;
    let degraded = env.condition(ns, "bad", "Degraded")?.context("no Degraded")?;
    ensure!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.openmrs.backend.resources.requests.cpu")),
        "message does not name the field: {degraded}"
    );
    let ready = env.condition(ns, "bad", "Ready")?.context("no Ready")?;
    ensure!(ready["status"] == "False", "Ready should be False: {ready}");
    let children = env.children(ns, "bad")?;
    ensure!(children.is_empty(), "an invalid spec must apply nothing, found {children:?}");
    env.wait_warning_event(ns, "InvalidSpec", Duration::from_secs(30))?;
    Ok(())
}

/// Three clinics deleted at once: `gone` under a confirmed `Delete` with `deleteWithClinic`,
/// `unconfirmed` under `Delete` without the confirmation (an accidental delete, an Argo CD
/// prune), `kept` under `Retain`. Only the confirmed one loses its data; only its backups are set
/// to expire, after the platform's delay, and none is deleted on the spot.
fn deletion_leaves_no_orphans(env: &Env) -> Result<()> {
    let ns = "e2e-delete";
    env.namespace(ns)?;
    env.clinic(ns, "gone", "  deletionPolicy: Delete\n  backup:\n    deleteWithClinic: true\n")?;
    env.clinic(ns, "unconfirmed", "  deletionPolicy: Delete\n  backup:\n    deleteWithClinic: true\n")?;
    env.clinic(ns, "kept", "  deletionPolicy: Retain\n")?;
    let clinics = ["gone", "unconfirmed", "kept"];
    for clinic in clinics {
        env.wait_ready(ns, clinic, wait())?;
    }
    let on_deletion = |clinic: &str| -> Result<Value> {
        Ok(env.json(&["-n", ns, "get", "clinicplatform", clinic])?["status"]["onDeletion"].clone())
    };
    // Delete is not in force until confirmed: the status says so, and an event says how.
    ensure!(
        on_deletion("unconfirmed")? == json!({"data": "Retain", "backupsExpire": false}),
        "{}",
        on_deletion("unconfirmed")?
    );
    eventually("a DeletionNotConfirmed event", Duration::from_secs(30), || {
        let events =
            env.json(&["-n", ns, "get", "events", "--field-selector", "reason=DeletionNotConfirmed"])?;
        Ok(events["items"].as_array().into_iter().flatten().any(|e| {
            e["involvedObject"]["name"] == "unconfirmed"
                && e["message"]
                    .as_str()
                    .is_some_and(|n| n.contains(clinic_operator::api::CONFIRM_DELETION_ANNOTATION))
        }))
    })
    .with_context(|| format!("events: {}", env.kubectl(&["-n", ns, "get", "events"]).unwrap_or_default()))?;
    // A confirmation that names another object's uid is no confirmation.
    let uid = |clinic: &str| -> Result<String> {
        Ok(env.json(&["-n", ns, "get", "clinicplatform", clinic])?["metadata"]["uid"]
            .as_str()
            .context("no uid")?
            .to_string())
    };
    let confirm = |clinic: &str, value: &str| {
        env.kubectl(&[
            "-n",
            ns,
            "annotate",
            "clinicplatform",
            clinic,
            &format!("{}={value}", clinic_operator::api::CONFIRM_DELETION_ANNOTATION),
            "--overwrite",
        ])
    };
    confirm("unconfirmed", &uid("kept")?)?;
    // The confirmation as docs/backup.md writes it.
    let vars = |clinic: &str, backup: &str| {
        [("CLINIC_NS", ns), ("CLINIC", clinic), ("BACKUP", backup)]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    };
    run_doc_block(env, "docs/backup.md", "confirm-deletion", &vars("gone", ""))?;
    eventually("the confirmed Delete in force", Duration::from_secs(30), || {
        Ok(on_deletion("gone")? == json!({"data": "Delete", "backupsExpire": true}))
    })?;
    ensure!(on_deletion("unconfirmed")?["data"] == "Retain", "{}", on_deletion("unconfirmed")?);
    let retention = env.json(&["-n", ns, "get", "statefulset", "gone-mariadb"])?["spec"]
        ["persistentVolumeClaimRetentionPolicy"]["whenDeleted"]
        .clone();
    ensure!(retention == "Delete", "gone-mariadb whenDeleted: {retention}");

    for clinic in clinics {
        env.kubectl(&[
            "-n",
            "velero",
            "get",
            "schedules.velero.io",
            &clinic_operator::desired::backup::outside_name(ns, clinic),
        ])?;
        env.velero_backup(ns, clinic, &format!("{ns}-{clinic}-20261121020000"), "Completed", 2)?;
    }
    let expiration = |clinic: &str| -> Result<Option<jiff::Timestamp>> {
        let backup = env.json(&[
            "-n",
            "velero",
            "get",
            "backups.velero.io",
            &format!("{ns}-{clinic}-20261121020000"),
        ])?;
        Ok(backup["status"]["expiration"].as_str().and_then(|t| t.parse().ok()))
    };
    let deleted_at = jiff::Timestamp::now();
    env.kubectl(&[
        "-n",
        ns,
        "delete",
        "clinicplatform",
        "gone",
        "unconfirmed",
        "kept",
        "--wait=true",
        "--timeout=60s",
    ])?;
    // The finalizer removed every Schedule (they live in Velero's namespace: no owner reference).
    for clinic in clinics {
        ensure!(
            env.kubectl(&[
                "-n",
                "velero",
                "get",
                "schedules.velero.io",
                &clinic_operator::desired::backup::outside_name(ns, clinic)
            ])
            .is_err(),
            "Schedule of {clinic} left behind"
        );
    }
    // Backups are never deleted on the spot: the confirmed clinic's expire after the policy's
    // delay (168h in the suite's policy), the others keep their own retention.
    let due = expiration("gone")?.context("the confirmed clinic's backup has no expiration")?;
    let delay = due.duration_since(deleted_at).as_secs();
    ensure!((167 * 3600..=169 * 3600).contains(&delay), "expiration {due} is {delay} s after the deletion");
    for clinic in ["unconfirmed", "kept"] {
        ensure!(expiration(clinic)?.is_none(), "the backup of {clinic} was set to expire");
    }
    // Undone as docs/backup.md writes it: the backup is kept until the date put back.
    let gone_backup = format!("{ns}-gone-20261121020000");
    run_doc_block(env, "docs/backup.md", "keep-backups", &vars("gone", &gone_backup))?;
    ensure!(
        expiration("gone")? == "2027-12-31T00:00:00Z".parse().ok(),
        "the expiration was not put back: {:?}",
        expiration("gone")?
    );
    let requests = env.json(&["-n", "velero", "get", "deletebackuprequests.velero.io"])?;
    ensure!(
        requests["items"].as_array().is_some_and(Vec::is_empty),
        "backups deleted on the spot: {requests}"
    );
    eventually("a BackupsExpiring event", Duration::from_secs(30), || {
        let events = env.json(&["-n", ns, "get", "events", "--field-selector", "reason=BackupsExpiring"])?;
        Ok(events["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|e| e["involvedObject"]["name"] == "gone")))
    })?;
    // Confirmed Delete: nothing with the instance label is left, volumes included.
    eventually("every child of a Delete clinic removed", Duration::from_secs(120), || {
        let left = env.children(ns, "gone")?;
        let pvcs = env.json(&["-n", ns, "get", "pvc", "-l", &format!("{INSTANCE}=gone")])?;
        Ok(left.is_empty() && pvcs["items"].as_array().is_some_and(Vec::is_empty))
    })?;
    // Retain, and Delete unconfirmed: workloads are gone, the data and the credentials that open
    // it are kept.
    for clinic in ["unconfirmed", "kept"] {
        eventually("workloads of a retained clinic removed", Duration::from_secs(120), || {
            let left = env.children(ns, clinic)?;
            Ok(left.iter().all(|c| c.starts_with("Secret/")))
        })?;
        let left = env.children(ns, clinic)?;
        ensure!(
            left.contains(&format!("Secret/{clinic}-db-credentials")),
            "{clinic} must keep the database credentials: {left:?}"
        );
        let pvcs = env.json(&["-n", ns, "get", "pvc", "-l", &format!("{INSTANCE}={clinic}")])?;
        ensure!(
            pvcs["items"].as_array().map(Vec::len) == Some(2),
            "{clinic} must keep both volume claims: {}",
            pvcs["items"]
        );
    }
    Ok(())
}

fn restart_mid_converge_keeps_secrets(env: &Env) -> Result<()> {
    let ns = "e2e-restart";
    env.namespace(ns)?;
    env.clinic(ns, "restart", "  openmrs: {}\n")?;
    eventually("generated Secret exists", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", ns, "get", "secret", "restart-db-credentials"]).is_ok())
    })?;
    let before = secret_fingerprint(env, ns, "restart-db-credentials")?;
    let admin_before = secret_fingerprint(env, ns, "restart-openmrs-admin")?;
    env.operator().restart()?;
    env.wait_ready(ns, "restart", wait())?;
    ensure!(
        secret_fingerprint(env, ns, "restart-db-credentials")? == before,
        "database credentials were regenerated"
    );
    ensure!(
        secret_fingerprint(env, ns, "restart-openmrs-admin")? == admin_before,
        "admin password was regenerated"
    );
    // One ReplicaSet per Deployment: no spurious template change across the restart.
    let rs = env.json(&["-n", ns, "get", "replicasets", "-l", &format!("{INSTANCE}=restart")])?;
    ensure!(rs["items"].as_array().map(Vec::len) == Some(2), "expected 2 ReplicaSets, got {}", rs["items"]);
    Ok(())
}

/// The verified-children ledger: a restarted operator trusts what it verified before only for
/// children nobody changed since; a change made while no operator ran is still put back.
fn a_restart_rereads_only_what_changed_while_down(env: &Env) -> Result<()> {
    let ns = "e2e-ledger";
    env.namespace(ns)?;
    env.clinic(ns, "calm", "  backup: {enabled: false}\n")?;
    env.clinic(ns, "tampered", "  backup: {enabled: false}\n")?;
    env.wait_ready(ns, "calm", wait())?;
    env.wait_ready(ns, "tampered", wait())?;
    // Both verified and written down (the ledger is written every 10 s).
    eventually("both clinics in the ledger", Duration::from_secs(60), || {
        let ledger = env.json(&["-n", "clinic-system", "get", "configmap", "clinic-operator-verified"])?;
        Ok(["e2e-ledger.calm", "e2e-ledger.tampered"].iter().all(|k| ledger["data"][k].is_string()))
    })?;
    let policy = |env: &Env| -> Result<Value> {
        Ok(env.json(&["-n", ns, "get", "networkpolicy", "tampered-default-deny"])?["spec"].clone())
    };
    let declared = policy(env)?;
    // No operator runs while the default-deny policy is opened to every ingress.
    env.operator().kill();
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "networkpolicy",
        "tampered-default-deny",
        "--type=merge",
        "-p",
        r#"{"spec":{"ingress":[{}]}}"#,
    ])?;
    ensure!(policy(env)? != declared, "the change did not take");
    let log_before = env.operator().output().len();
    env.operator().restart()?;
    eventually("the opened policy put back after the restart", Duration::from_secs(60), || {
        Ok(policy(env)? == declared)
    })?;
    eventually(
        "a DriftCorrected event for the policy changed while no operator ran",
        Duration::from_secs(30),
        || {
            let events =
                env.json(&["-n", ns, "get", "events", "--field-selector", "reason=DriftCorrected"])?;
            Ok(events["items"].as_array().into_iter().flatten().any(|e| {
                e["message"].as_str().is_some_and(|m| m.starts_with("NetworkPolicy tampered-default-deny"))
            }))
        },
    )?;
    // The untouched clinic's children were trusted from the ledger, not read again, and its
    // first pass stopped there (resume); the tampered one took the full pass at once.
    let logged = |message: &str, clinic: &str| {
        let log = env.operator().output();
        let clinic = format!(r#""clinic":"{clinic}""#);
        log.get(log_before..).unwrap_or_default().lines().any(|l| l.contains(message) && l.contains(&clinic))
    };
    eventually("the calm clinic's children trusted from the ledger", Duration::from_secs(60), || {
        Ok(logged("children unchanged since their last verification", "calm"))
    })?;
    const RESUMED: &str = "nothing changed while no operator ran";
    ensure!(logged(RESUMED, "calm"), "the calm clinic's first pass was not left at that");
    ensure!(!logged(RESUMED, "tampered"), "the tampered clinic's first pass was deferred");
    env.wait_ready(ns, "calm", wait())?;
    Ok(())
}

fn converged_clinic_is_not_rewritten(env: &Env) -> Result<()> {
    env.wait_ready("clinic-minimal", "clinic-minimal", wait())?;
    let versions = |env: &Env| -> Result<BTreeSet<String>> {
        let list = env.json(&[
            "-n",
            "clinic-minimal",
            "get",
            "configmaps,services,statefulsets,deployments,networkpolicies",
            "-l",
            &format!("{INSTANCE}=clinic-minimal"),
        ])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| format!("{}/{}@{}", o["kind"], o["metadata"]["name"], o["metadata"]["resourceVersion"]))
            .collect())
    };
    let before = versions(env)?;
    // Touch the ClinicPlatform (an annotation: no spec change) to force a reconcile.
    env.kubectl(&[
        "-n",
        "clinic-minimal",
        "annotate",
        "clinicplatform",
        "clinic-minimal",
        "e2e/poke=1",
        "--overwrite",
    ])?;
    std::thread::sleep(Duration::from_secs(3));
    let after = versions(env)?;
    ensure!(
        before == after,
        "a reconcile of a converged clinic rewrote children:\nbefore {before:?}\nafter {after:?}"
    );
    Ok(())
}

fn rbac_is_least_privilege(env: &Env) -> Result<()> {
    let can = |verb: &str, resource: &str| -> Result<bool> {
        let out = env.plane.kubectl_as(&env.operator_kubeconfig, &["auth", "can-i", verb, resource, "-A"]);
        Ok(matches!(out, Ok(ref s) if s.trim() == "yes"))
    };
    for (verb, resource) in [
        ("create", "statefulsets.apps"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("create", "events.events.k8s.io"),
        ("watch", "secrets"),
        ("watch", "servicemonitors.monitoring.coreos.com"),
    ] {
        ensure!(can(verb, resource)?, "the operator needs {verb} {resource}");
    }
    for (verb, resource) in [
        ("delete", "secrets"),
        ("update", "secrets"),
        ("create", "pods"),
        ("create", "pods/exec"),
        ("delete", "persistentvolumeclaims"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("delete", "namespaces"),
        ("delete", "clinicplatforms.clinic.audioprothese.fr"),
        ("get", "nodes"),
        ("delete", "namespaces"),
        ("create", "namespaces"),
        ("update", "namespaces"),
        ("delete", "backups.velero.io"),
        ("create", "deletebackuprequests.velero.io"),
    ] {
        ensure!(!can(verb, resource)?, "the operator must not be able to {verb} {resource}");
    }
    // Velero's rights hold in Velero's namespace only (the chart's Role there), not cluster-wide.
    let can_in = |verb: &str, resource: &str, ns: &str| -> bool {
        let out =
            env.plane.kubectl_as(&env.operator_kubeconfig, &["auth", "can-i", verb, resource, "-n", ns]);
        matches!(out, Ok(ref s) if s.trim() == "yes")
    };
    for (verb, resource) in [
        ("create", "schedules.velero.io"),
        ("patch", "schedules.velero.io"),
        ("watch", "schedules.velero.io"),
        ("list", "backups.velero.io"),
        ("watch", "backups.velero.io"),
    ] {
        ensure!(can_in(verb, resource, "velero"), "the operator needs {verb} {resource} in velero");
        for ns in ["kube-system", "e2e-delete", "default"] {
            ensure!(!can_in(verb, resource, ns), "the operator can {verb} {resource} in {ns}");
        }
    }
    Ok(())
}

/// A hostile tenant tries, through its own ClinicPlatform, to reach another clinic or the
/// cluster. Its victim lives in `e2e-hostile-lyon` as `main`; the tenant picks the look-alike
/// `e2e-hostile`/`lyon-main` (both once gave one Velero Schedule name). Every try is refused
/// or contained, and nothing of the victim changes: each of its objects (its namespace's
/// children, its Schedule and its dashboard outside) keeps what the operator wrote of it (its
/// field manager's managedFields entry, with the time of the last write), its labels and its
/// annotations. (Its resourceVersion moves with every status the cluster's own controllers
/// write, so it cannot be the measure over a scenario that lasts.)
fn hostile_tenant_cannot_touch_another_clinic(env: &Env) -> Result<()> {
    let (victim_ns, attacker_ns) = ("e2e-hostile-lyon", "e2e-hostile");
    env.namespace(victim_ns)?;
    env.namespace(attacker_ns)?;
    env.namespace("grafana")?;
    let dashboard_in_grafana = "  monitoring:\n    dashboard:\n      namespace: grafana\n";
    env.clinic(victim_ns, "main", dashboard_in_grafana)?;
    env.clinic(attacker_ns, "lyon-main", dashboard_in_grafana)?;
    env.wait_ready(victim_ns, "main", wait())?;
    env.wait_ready(attacker_ns, "lyon-main", wait())?;
    let outside = |ns: &str, name: &str| clinic_operator::desired::backup::outside_name(ns, name);
    ensure!(
        outside(victim_ns, "main") != outside(attacker_ns, "lyon-main"),
        "look-alike clinics share a name"
    );
    eventually("both Schedules and dashboards", Duration::from_secs(30), || {
        Ok([victim_ns, attacker_ns].iter().zip(["main", "lyon-main"]).all(|(ns, name)| {
            env.kubectl(&["-n", "velero", "get", "schedules.velero.io", &outside(ns, name)]).is_ok()
                && env
                    .kubectl(&[
                        "-n",
                        "grafana",
                        "get",
                        "configmap",
                        &format!("{}-dashboard", outside(ns, name)),
                    ])
                    .is_ok()
        }))
    })?;
    // Everything of the victim, with what says whether it was changed.
    let snapshot = || -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let kinds = "statefulsets,deployments,services,configmaps,secrets,networkpolicies,horizontalpodautoscalers,poddisruptionbudgets";
        let mut lists =
            vec![env.json(&["-n", victim_ns, "get", kinds, "-o", "json", "--show-managed-fields"])?];
        lists.push(env.json(&[
            "-n",
            "velero",
            "get",
            "schedules.velero.io",
            &outside(victim_ns, "main"),
            "-o",
            "json",
            "--show-managed-fields",
        ])?);
        lists.push(env.json(&[
            "-n",
            "grafana",
            "get",
            "configmap",
            &format!("{}-dashboard", outside(victim_ns, "main")),
            "-o",
            "json",
            "--show-managed-fields",
        ])?);
        lists.push(env.json(&["get", "namespace", victim_ns, "-o", "json", "--show-managed-fields"])?);
        for list in lists {
            let items = list["items"].as_array().cloned().unwrap_or_else(|| vec![list.clone()]);
            for item in items {
                // Controllers keep writing the victim's objects on their own (workload and
                // autoscaler status, the autoscaler's replicas), each time with a new
                // resourceVersion. What the operator wrote is its managedFields entry (fields and
                // time), with the labels and annotations: those must not move.
                let meta = &item["metadata"];
                let operator_fields: Vec<&Value> = meta["managedFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["manager"] == clinic_operator::api::FIELD_MANAGER)
                    .collect();
                // Objects the operator never wrote (kube-root-ca.crt) have no status either.
                let version = if operator_fields.is_empty() {
                    format!("resourceVersion {}", meta["resourceVersion"])
                } else {
                    format!("{operator_fields:?} {} {}", meta["labels"], meta["annotations"])
                };
                out.insert(format!(
                    "{} {}/{} {version}",
                    item["kind"].as_str().unwrap_or(""),
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap_or(""),
                ));
            }
        }
        Ok(out)
    };
    let before = snapshot()?;

    let mut contained = 0;
    // Pointing cross-namespace fields at the victim or the system: refused by the platform policy.
    for (spec, field) in [
        ("  backup:\n    veleroNamespace: e2e-hostile-lyon\n", "spec.backup.veleroNamespace"),
        ("  backup:\n    storageLocation: lyon-bucket\n", "spec.backup.storageLocation"),
        (
            "  monitoring:\n    dashboard:\n      namespace: e2e-hostile-lyon\n",
            "spec.monitoring.dashboard.namespace",
        ),
        (
            "  monitoring:\n    dashboard:\n      namespace: kube-system\n",
            "spec.monitoring.dashboard.namespace",
        ),
        ("  monitoring:\n    prometheusNamespace: e2e-hostile-lyon\n", "spec.monitoring.prometheusNamespace"),
        (
            "  ingress:\n    host: emr.lyon.example.fr\n    controllerNamespace: e2e-hostile-lyon\n    tls: {secretName: t}\n",
            "spec.ingress.controllerNamespace",
        ),
        ("  ingress:\n    host: emr.lyon.example.com\n    tls: {secretName: t}\n", "spec.ingress.host"),
        ("  images:\n    registry: registry.evil.example\n", "spec.images.registry"),
        ("  security:\n    enforcePodSecurity: false\n", "spec.security.enforcePodSecurity"),
        ("  residency:\n    regions: [us-east-1]\n", "spec.residency.regions[0]"),
        (
            "  security:\n    extraEgress: [{cidr: 10.96.0.0/16, port: 443}]\n",
            "spec.security.extraEgress[0].cidr",
        ),
    ] {
        env.clinic(attacker_ns, "lyon-main", spec)?;
        eventually(&format!("{field} refused"), Duration::from_secs(30), || {
            Ok(env.condition(attacker_ns, "lyon-main", "Degraded")?.is_some_and(|c| {
                c["reason"] == "NotAllowed" && c["message"].as_str().is_some_and(|m| m.contains(field))
            }))
        })?;
        contained += 1;
    }
    // Input that would become code or open the network: refused by the API server itself.
    for (spec, field) in [
        (
            "  openmrs:\n    spaConfigUrls: ['https://x.example/c.json\"];alert(document.cookie);//']\n",
            "spec.openmrs.spaConfigUrls",
        ),
        (
            "  openmrs: {backend: {javaMemoryOpts: \"-XX:OnOutOfMemoryError=/bin/sh\"}}",
            "spec.openmrs.backend.javaMemoryOpts",
        ),
        ("  security: {extraEgress: [{cidr: 0.0.0.0/0, port: 443}]}", "spec.security.extraEgress"),
        ("  security: {extraEgress: [{cidr: 169.254.169.254/32, port: 80}]}", "spec.security.extraEgress"),
        ("  monitoring: {labels: {app.kubernetes.io/instance: main}}", "spec.monitoring.labels"),
    ] {
        match env.clinic(attacker_ns, "lyon-main", spec) {
            Ok(()) => anyhow::bail!("the API server accepted {spec}"),
            Err(e) => ensure!(format!("{e:#}").contains(field), "refused without naming {field}: {e:#}"),
        }
        contained += 1;
    }
    // A fake compliance claim counts for nothing.
    env.clinic(attacker_ns, "lyon-main", "  security:\n    storageEncrypted: true\n")?;
    eventually("the claim ignored", Duration::from_secs(60), || {
        let cp = env.json(&["-n", attacker_ns, "get", "clinicplatform", "lyon-main"])?;
        Ok(cp["status"]["observedGeneration"] == cp["metadata"]["generation"]
            && cp["status"]["compliance"]["encryptionAtRest"] == false
            && env.condition(attacker_ns, "lyon-main", "Degraded")?.is_some_and(|c| c["status"] == "False"))
    })?;
    contained += 1;
    // An accidental (or copied) Delete: deletionPolicy Delete confirmed with the victim's uid is
    // no confirmation, so the tenant's own data outlives the deletion; the victim keeps all of its.
    env.clinic(attacker_ns, "lyon-main", "  deletionPolicy: Delete\n")?;
    let victim_uid = env.json(&["-n", victim_ns, "get", "clinicplatform", "main"])?["metadata"]["uid"]
        .as_str()
        .context("no uid")?
        .to_string();
    env.kubectl(&[
        "-n",
        attacker_ns,
        "annotate",
        "clinicplatform",
        "lyon-main",
        &format!("{}={victim_uid}", clinic_operator::api::CONFIRM_DELETION_ANNOTATION),
        "--overwrite",
    ])?;
    let claims = || -> Result<usize> {
        let pvcs = env.json(&["-n", attacker_ns, "get", "pvc", "-l", &format!("{INSTANCE}=lyon-main")])?;
        Ok(pvcs["items"].as_array().map_or(0, Vec::len))
    };
    eventually("the tenant's volume claims", Duration::from_secs(60), || Ok(claims()? == 2))?;
    env.kubectl(&[
        "-n",
        attacker_ns,
        "delete",
        "clinicplatform",
        "lyon-main",
        "--wait=true",
        "--timeout=60s",
    ])?;
    ensure!(
        env.kubectl(&["-n", "velero", "get", "schedules.velero.io", &outside(attacker_ns, "lyon-main")])
            .is_err(),
        "the tenant's own Schedule outlived it"
    );
    // The claims would go with their StatefulSets (whenDeleted: Delete): wait until those are.
    eventually("the tenant's workloads collected", Duration::from_secs(120), || {
        let left =
            env.json(&["-n", attacker_ns, "get", "statefulsets", "-l", &format!("{INSTANCE}=lyon-main")])?;
        Ok(left["items"].as_array().is_some_and(Vec::is_empty))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(claims()? == 2, "an unconfirmed Delete removed the tenant's volume claims");
    env.kubectl(&["-n", attacker_ns, "get", "secret", "lyon-main-db-credentials"])
        .context("an unconfirmed Delete removed the tenant's database credentials")?;
    contained += 1;

    let after = snapshot()?;
    let changed: Vec<&String> = before.symmetric_difference(&after).collect();
    ensure!(changed.is_empty(), "the victim's objects changed: {changed:?}");
    eprintln!(
        "    {contained} hostile tries contained; {} objects of the other clinic unchanged",
        before.len()
    );
    Ok(())
}

/// RBAC lets the operator create Deployments and patch Secrets anywhere; the chart's
/// ValidatingAdmissionPolicies hold its ServiceAccount to what it is for. Each attempt below is
/// allowed by the ClusterRole and must be refused by admission (dry runs: nothing is kept).
fn operator_account_is_held_by_admission_policies(env: &Env) -> Result<()> {
    let ns = "e2e-guard";
    env.namespace(ns)?;
    env.kubectl(&["-n", ns, "create", "secret", "generic", "guarded", "--from-literal=password=original"])?;
    let as_operator = |yaml: &str| -> Result<(), String> {
        let path = env.plane.dir.join("guard.yaml");
        std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
        env.plane
            .kubectl_as(
                &env.operator_kubeconfig,
                &["create", "--dry-run=server", "-f", &path.display().to_string()],
            )
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    };
    let deployment = |namespace: &str, pod: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: guard, namespace: {namespace}}}\nspec:\n  selector: {{matchLabels: {{app: guard}}}}\n  template:\n    metadata: {{labels: {{app: guard}}}}\n    spec:\n{pod}      containers:\n        - name: c\n          image: docker.io/library/busybox:1.37\n"
        )
    };
    // The control: a plain Deployment in a clinic namespace passes (so refusals below are the
    // policies', not RBAC's or the schema's).
    as_operator(&deployment(ns, ""))
        .map_err(|e| anyhow::anyhow!("a hardened Deployment was refused: {e}"))?;
    let mut refused = 0;
    for (what, yaml, words) in [
        ("a Deployment in kube-system", deployment("kube-system", ""), "system namespaces"),
        ("hostNetwork", deployment(ns, "      hostNetwork: true\n"), "host namespace"),
        ("hostPID", deployment(ns, "      hostPID: true\n"), "host namespace"),
        ("another ServiceAccount", deployment(ns, "      serviceAccountName: admin\n"), "ServiceAccount"),
        (
            "a hostPath volume",
            deployment(ns, "      volumes: [{name: h, hostPath: {path: /}}]\n"),
            "host path",
        ),
    ] {
        match as_operator(&yaml) {
            Ok(()) => anyhow::bail!("the operator's account could create {what}"),
            Err(e) => ensure!(e.contains(words), "{what} refused, but not by the policy: {e}"),
        }
        refused += 1;
    }
    let privileged = deployment(ns, "").replace(
        "image: docker.io/library/busybox:1.37\n",
        "image: docker.io/library/busybox:1.37\n          securityContext: {privileged: true}\n",
    );
    ensure!(
        as_operator(&privileged).is_err_and(|e| e.contains("privileged")),
        "a privileged container passed"
    );
    refused += 1;
    // Everything else it writes: never in the system namespaces or its own.
    for yaml in [
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns-guard, namespace: kube-system}\ndata: {Corefile: '.:53 { forward . 203.0.113.1 }'}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: guard, namespace: kube-system}\nspec: {ports: [{port: 53}]}\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: guard, namespace: clinic-system}\nstringData: {token: x}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: guard, namespace: clinic-system}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: clinic-operator-verified, namespace: kube-system}\n",
    ] {
        ensure!(
            as_operator(yaml).is_err_and(|e| e.contains("never writes in system namespaces")),
            "the operator's account could write {yaml}"
        );
        refused += 1;
    }
    // Its one exception there: the verified-children ledger (the chart's Role allows it too).
    // (Applied as the operator writes it: the operator may well have made it already.)
    let ledger = env.plane.dir.join("ledger.yaml");
    std::fs::write(
        &ledger,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: clinic-operator-verified, namespace: clinic-system}\n",
    )?;
    env.plane
        .kubectl_as(
            &env.operator_kubeconfig,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=clinic-operator",
                "--dry-run=server",
                "-f",
                &ledger.display().to_string(),
            ],
        )
        .context("the operator's ledger was refused")?;
    // Secrets: labels may change (adoption), data never.
    let patch = |body: &str| {
        env.plane.kubectl_as(
            &env.operator_kubeconfig,
            &["-n", ns, "patch", "secret", "guarded", "--type=merge", "--dry-run=server", "-p", body],
        )
    };
    patch(r#"{"metadata":{"labels":{"app.kubernetes.io/managed-by":"clinic-operator"}}}"#)?;
    let rewrite = patch(r#"{"data":{"password":"b3duZWQ="}}"#);
    ensure!(
        rewrite.as_ref().is_err_and(|e| format!("{e:#}").contains("never changes the data")),
        "the operator's account could rewrite a Secret: {rewrite:?}"
    );
    refused += 1;
    // The one exception: a certificate the operator's CA issued and renews (MariaDB's, the
    // backend's). The same rewrite of another TLS Secret (an Ingress certificate) is refused.
    let tls_secret = |name: &str, annotated: bool| -> Result<()> {
        let annotations = if annotated {
            "\n  annotations: {clinic.audioprothese.fr/not-after: '2027-01-01T00:00:00Z'}"
        } else {
            ""
        };
        env.plane.apply_yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}{annotations}\ntype: kubernetes.io/tls\ndata: {{tls.crt: b2xk, tls.key: b2xk}}\n"
        ))
        .map(drop)
    };
    tls_secret("guard-db-tls", true)?;
    tls_secret("guard-backend-tls", true)?;
    tls_secret("guard-tls", false)?;
    let renew = |name: &str| {
        env.plane.kubectl_as(
            &env.operator_kubeconfig,
            &[
                "-n",
                ns,
                "patch",
                "secret",
                name,
                "--type=merge",
                "--dry-run=server",
                "-p",
                r#"{"data":{"tls.crt":"bmV3"}}"#,
            ],
        )
    };
    renew("guard-db-tls").context("the operator's account could not renew a database certificate")?;
    renew("guard-backend-tls").context("the operator's account could not renew a backend certificate")?;
    let ingress_certificate = renew("guard-tls");
    ensure!(
        ingress_certificate.as_ref().is_err_and(|e| format!("{e:#}").contains("never changes the data")),
        "the operator's account could rewrite another TLS Secret: {ingress_certificate:?}"
    );
    refused += 1;
    // Namespaces: only the Pod Security restricted labels, added.
    let relabel = |label: &str| {
        env.plane.kubectl_as(
            &env.operator_kubeconfig,
            &["label", "namespace", ns, label, "--overwrite", "--dry-run=server"],
        )
    };
    for label in
        ["pod-security.kubernetes.io/enforce=privileged", "pod-security.kubernetes.io/enforce-", "team=other"]
    {
        ensure!(
            relabel(label).as_ref().is_err_and(|e| format!("{e:#}").contains("only adds the Pod Security")),
            "the operator's account could set {label} on a namespace"
        );
        refused += 1;
    }
    eprintln!("    {refused} writes the ClusterRole allows refused by the admission policies");
    Ok(())
}

fn operator_endpoints_and_no_secret_in_logs(env: &Env) -> Result<()> {
    let op = env.operator();
    let (code, _) = op.http_get("/readyz")?;
    ensure!(code == 200, "/readyz answered {code}");
    let (code, metrics) = op.http_get("/metrics")?;
    ensure!(
        code == 200 && metrics.contains("clinic_operator_reconcile_duration_seconds"),
        "metrics missing:\n{metrics}"
    );
    drop(op);
    // The live exposition passes Prometheus' own parser (promtool, built by make test).
    let tools = std::env::var("CLINIC_TOOLS_BIN").context("CLINIC_TOOLS_BIN unset: run make test")?;
    let mut promtool = std::process::Command::new(format!("{tools}/promtool"))
        .args(["check", "metrics", "--lint=none", "--extended"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut promtool.stdin.take().context("stdin")?, metrics.as_bytes())?;
    let checked = promtool.wait_with_output()?;
    ensure!(checked.status.success(), "promtool: {}", String::from_utf8_lossy(&checked.stdout));
    // No generated password appears in what the operator printed.
    let output = env.operator().output();
    // Every line is JSON; lines of a reconcile name the clinic (for LogQL `| json`).
    let mut with_clinic = 0;
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if v["span"]["clinic"].is_string() && v["span"]["namespace"].is_string() {
            with_clinic += 1;
        }
    }
    ensure!(with_clinic > 0, "no log line carries span.clinic");
    let secrets =
        env.json(&["get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=clinic-operator"])?;
    for s in secrets["items"].as_array().into_iter().flatten() {
        for (key, value) in s["data"].as_object().into_iter().flatten() {
            let decoded = base64_decode(value.as_str().unwrap_or_default());
            if decoded.len() >= 16 {
                ensure!(
                    !output.contains(&decoded),
                    "secret {}:{key} appears in the operator output",
                    s["metadata"]["name"]
                );
            }
        }
    }
    Ok(())
}

fn backup_schedule_and_health(env: &Env) -> Result<()> {
    let ns = "e2e-backup";
    env.namespace(ns)?;
    env.clinic(ns, "bk", "  backup:\n    schedule: \"15 3 * * *\"\n    rpo: 26h\n")?;
    env.wait_ready(ns, "bk", wait())?;
    // Accepted by Velero's real schema.
    let schedule = env.json(&[
        "-n",
        "velero",
        "get",
        "schedules.velero.io",
        &clinic_operator::desired::backup::outside_name(ns, "bk"),
    ])?;
    ensure!(schedule["spec"]["schedule"] == "15 3 * * *", "schedule: {}", schedule["spec"]);
    ensure!(schedule["spec"]["template"]["includedNamespaces"][0] == ns);
    ensure!(
        schedule["spec"]["template"]["hooks"]["resources"][0]["pre"][0]["exec"]["container"] == "mariadb"
    );
    let cond = env.condition(ns, "bk", "BackupReady")?.context("no BackupReady")?;
    ensure!(cond["reason"] == "AwaitingFirstBackup", "{cond}");

    let backup_ready = |reason: &str| -> Result<()> {
        env.poke(ns, "bk")?;
        eventually(&format!("BackupReady reason {reason}"), Duration::from_secs(30), || {
            Ok(env.condition(ns, "bk", "BackupReady")?.is_some_and(|c| c["reason"] == reason))
        })
    };
    env.velero_backup(ns, "bk", "e2e-backup-bk-20261120031500", "Completed", 3)?;
    backup_ready("WithinRPO")?;
    let cp = env.json(&["-n", ns, "get", "clinicplatform", "bk"])?;
    ensure!(cp["status"]["lastBackupTime"].is_string(), "no lastBackupTime: {}", cp["status"]);
    let columns = env.kubectl(&["-n", ns, "get", "clinicplatform", "bk"])?;
    ensure!(columns.contains("LAST BACKUP") && !columns.contains("<none>"), "printer column: {columns}");

    env.velero_backup(ns, "bk", "e2e-backup-bk-20261121031500", "PartiallyFailed", 1)?;
    backup_ready("BackupPartiallyFailed")?;
    let cond = env.condition(ns, "bk", "BackupReady")?.context("no BackupReady")?;
    ensure!(
        cond["status"] == "False"
            && cond["message"].as_str().is_some_and(|m| m.contains("e2e-backup-bk-20261121031500")),
        "{cond}"
    );

    env.kubectl(&["-n", "velero", "delete", "backups.velero.io", "-l", "app.kubernetes.io/instance=bk"])?;
    env.velero_backup(ns, "bk", "e2e-backup-bk-20261119031500", "Completed", 40)?;
    backup_ready("RPOExceeded")?;
    // Backup health never makes the platform itself not Ready.
    ensure!(env.condition(ns, "bk", "Ready")?.is_some_and(|c| c["status"] == "True"));
    Ok(())
}

fn upgrade_waits_for_a_backup(env: &Env) -> Result<()> {
    let ns = "e2e-upgrade";
    env.namespace(ns)?;
    env.clinic(ns, "up", "  openmrs:\n    version: 3.7.1\n")?;
    env.wait_ready(ns, "up", wait())?;
    let before = env.backend_image(ns, "up")?;
    ensure!(before.ends_with(":3.7.1-no-demo"), "{before}");

    let gate_backup = |target: &str| -> Result<String> {
        let mut found = String::new();
        eventually(&format!("pre-upgrade backup for {target}"), Duration::from_secs(30), || {
            let list = env.json(&[
                "-n",
                "velero",
                "get",
                "backups.velero.io",
                "-l",
                "app.kubernetes.io/instance=up",
            ])?;
            for b in list["items"].as_array().into_iter().flatten() {
                if b["metadata"]["annotations"]["clinic.audioprothese.fr/upgrade-to"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(target))
                {
                    found = b["metadata"]["name"].as_str().unwrap_or("").to_string();
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        Ok(found)
    };

    let set_version = |version: &str| -> Result<()> {
        let patch = format!(r#"{{"spec":{{"openmrs":{{"version":"{version}"}}}}}}"#);
        env.merge_patch(ns, "clinicplatform", "up", &patch)
    };
    // A new version: a backup first, nothing rolls meanwhile.
    set_version("3.8.0")?;
    let backup = gate_backup("3.8.0-no-demo")?;
    eventually("Progressing=AwaitingBackup", Duration::from_secs(30), || {
        Ok(env.condition(ns, "up", "Progressing")?.is_some_and(|c| c["reason"] == "AwaitingBackup"))
    })?;
    ensure!(env.backend_image(ns, "up")? == before, "the backend rolled before its backup completed");
    // The backup completes: the upgrade goes on.
    env.set_backup_phase(&backup, "Completed")?;
    env.poke(ns, "up")?;
    eventually("backend upgraded to 3.8.0", Duration::from_secs(40), || {
        Ok(env.backend_image(ns, "up")?.ends_with(":3.8.0-no-demo"))
    })?;

    // The next upgrade's backup fails: nothing is upgraded, and the status and an event say why.
    set_version("3.9.0")?;
    let backup = gate_backup("3.9.0-no-demo")?;
    env.set_backup_phase(&backup, "Failed")?;
    env.poke(ns, "up")?;
    env.wait_condition(ns, "up", ("Degraded", "True", "UpgradeBackupFailed"), Duration::from_secs(40))?;
    ensure!(env.backend_image(ns, "up")?.ends_with(":3.8.0-no-demo"), "upgraded despite a failed backup");
    env.wait_warning_event(ns, "UpgradeBackupFailed", Duration::from_secs(20))?;
    // Skipping the gate is explicit.
    env.merge_patch(ns, "clinicplatform", "up", r#"{"spec":{"backup":{"upgradeGate":"Skip"}}}"#)?;
    eventually("backend upgraded to 3.9.0 with the gate skipped", Duration::from_secs(40), || {
        Ok(env.backend_image(ns, "up")?.ends_with(":3.9.0-no-demo"))
    })?;

    // MariaDB passes the same gate: mariadb-upgrade rewrites the data's system tables.
    let database_image = || -> Result<String> {
        let sts = env.json(&["-n", ns, "get", "statefulset", "up-mariadb"])?;
        Ok(sts["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string())
    };
    let versions = || -> Result<Value> {
        Ok(env.json(&["-n", ns, "get", "clinicplatform", "up"])?["status"]["versions"].clone())
    };
    eventually("status.versions of what runs", Duration::from_secs(40), || {
        Ok(versions()? == json!({"openmrs": "3.9.0", "database": "10.11"}))
    })
    .with_context(|| format!("versions: {:?}", versions()))?;
    env.merge_patch(
        ns,
        "clinicplatform",
        "up",
        r#"{"spec":{"backup":{"upgradeGate":"Required"},"database":{"version":"11.4"}}}"#,
    )?;
    let backup = gate_backup("library/mariadb:11.4")?;
    ensure!(database_image()?.ends_with(":10.11"), "MariaDB moved before its backup: {}", database_image()?);
    env.set_backup_phase(&backup, "Completed")?;
    env.poke(ns, "up")?;
    eventually("MariaDB upgraded to 11.4", Duration::from_secs(40), || {
        Ok(database_image()?.ends_with(":11.4"))
    })?;
    eventually("status.versions.database 11.4", Duration::from_secs(60), || {
        Ok(versions()?["database"] == "11.4")
    })?;
    // And back is refused, gate or no gate: an older MariaDB cannot read the data files.
    env.merge_patch(
        ns,
        "clinicplatform",
        "up",
        r#"{"spec":{"backup":{"upgradeGate":"Skip"},"database":{"version":"10.11"}}}"#,
    )?;
    env.wait_condition(ns, "up", ("Degraded", "True", "DatabaseDowngrade"), Duration::from_secs(40))?;
    ensure!(database_image()?.ends_with(":11.4"), "MariaDB was downgraded: {}", database_image()?);
    Ok(())
}

fn restored_namespace_is_adopted(env: &Env) -> Result<()> {
    let ns = "e2e-restore";
    env.namespace(ns)?;
    // What a Velero restore brings back before the ClinicPlatform: Secrets and a data volume.
    env.plane.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: rs-db-credentials\n  namespace: {ns}\n  labels: {{app.kubernetes.io/instance: rs, app.kubernetes.io/managed-by: clinic-operator}}\nstringData:\n  root-password: restored-root-password-0123456789abcdef\n  username: openmrs\n  password: restored-app-password-0123456789abcdef\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: rs-openmrs-admin\n  namespace: {ns}\nstringData:\n  password: restored-admin-password-0123456789abcdef\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data-rs-mariadb-0\n  namespace: {ns}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 10Gi}}}}\n"
    ))?;
    let db = secret_fingerprint(env, ns, "rs-db-credentials")?;
    let admin = secret_fingerprint(env, ns, "rs-openmrs-admin")?;
    env.clinic(ns, "rs", "  {}\n")?;
    env.wait_ready(ns, "rs", wait())?;
    ensure!(
        secret_fingerprint(env, ns, "rs-db-credentials")? == db,
        "restored database credentials were changed"
    );
    ensure!(secret_fingerprint(env, ns, "rs-openmrs-admin")? == admin, "restored admin password was changed");
    let labels = env.json(&["-n", ns, "get", "secret", "rs-openmrs-admin"])?["metadata"]["labels"].clone();
    ensure!(labels["app.kubernetes.io/instance"] == "rs", "adopted Secret not labelled: {labels}");
    Ok(())
}

fn namespace_pod_security_is_enforced_and_opt_out_is_visible(env: &Env) -> Result<()> {
    // A namespace as a platform team might create it: no Pod Security labels.
    env.plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e-psa\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e-psa-optout\n")?;
    env.clinic("e2e-psa", "psa", "  {}\n")?;
    eventually("namespace labelled restricted", Duration::from_secs(30), || {
        let n = env.json(&["get", "namespace", "e2e-psa"])?;
        let l = &n["metadata"]["labels"];
        Ok(["enforce", "audit", "warn"]
            .iter()
            .all(|m| l[format!("pod-security.kubernetes.io/{m}")] == "restricted"))
    })?;
    env.wait_ready("e2e-psa", "psa", wait())?;
    eventually("SecurityEnforced=True", Duration::from_secs(30), || {
        Ok(env.condition("e2e-psa", "psa", "SecurityEnforced")?.is_some_and(|c| c["status"] == "True"))
    })?;

    // A tenant cannot turn its own Pod Security off: the opt-out is the platform's (the policy's
    // allowPodSecurityOptOut, false here). Refused with the field named, nothing built.
    env.clinic("e2e-psa-optout", "open", "  security:\n    enforcePodSecurity: false\n")?;
    eventually("Degraded=True with NotAllowed", Duration::from_secs(60), || {
        Ok(env
            .condition("e2e-psa-optout", "open", "Degraded")?
            .is_some_and(|c| c["reason"] == "NotAllowed" && c["status"] == "True"))
    })?;
    let degraded = env.condition("e2e-psa-optout", "open", "Degraded")?.context("no Degraded")?;
    ensure!(
        degraded["message"].as_str().is_some_and(|m| m.contains("spec.security.enforcePodSecurity")),
        "{degraded}"
    );
    let workloads =
        env.kubectl(&["-n", "e2e-psa-optout", "get", "statefulsets,deployments", "-o", "name"])?;
    ensure!(workloads.trim().is_empty(), "a refused clinic got workloads: {workloads}");
    env.wait_warning_event("e2e-psa-optout", "NotAllowed", Duration::from_secs(20))?;
    Ok(())
}

/// `examples/high-availability.yaml` on a cluster without the mariadb-operator: refused with
/// `DatabaseOperatorMissing`, a Warning event and nothing written (no single MariaDB in its
/// place). The choice is fixed at creation: the API server refuses adding, removing or resizing
/// it afterwards. (The kind workflow installs the mariadb-operator and proves the rest.)
fn a_replicated_database_waits_for_the_mariadb_operator(env: &Env) -> Result<()> {
    let (ns, name) = ("clinic-ha", "clinic-ha");
    let example = workspace_root().join("examples/high-availability.yaml");
    env.kubectl(&["apply", "-f", &example.display().to_string()])?;
    env.wait_condition(ns, name, ("Degraded", "True", "DatabaseOperatorMissing"), Duration::from_secs(60))?;
    let degraded = env.condition(ns, name, "Degraded")?.context("no Degraded")?;
    ensure!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("k8s.mariadb.com") && m.contains("Nothing was applied")),
        "{degraded}"
    );
    env.wait_warning_event(ns, "DatabaseOperatorMissing", Duration::from_secs(20))?;
    let written = env.children(ns, name)?;
    ensure!(written.is_empty(), "a clinic waiting for the mariadb-operator got children: {written:?}");

    // Set at creation only, in both directions, and its size too.
    let refused = |patch: &str, clinic: &str| -> Result<String> {
        match env.kubectl(&["-n", ns, "patch", "clinicplatform", clinic, "--type=merge", "-p", patch]) {
            Ok(out) => anyhow::bail!("patch {patch} of {clinic} accepted: {out}"),
            Err(e) => Ok(format!("{e:#}")),
        }
    };
    let removed = refused(r#"{"spec":{"database":{"highAvailability":null}}}"#, name)?;
    ensure!(removed.contains("spec.database.highAvailability: set at creation only"), "{removed}");
    let resized = refused(r#"{"spec":{"database":{"highAvailability":{"replicas":5}}}}"#, name)?;
    ensure!(resized.contains("set at creation only"), "{resized}");
    env.clinic(ns, "single", "  paused: true\n")?;
    let added = refused(r#"{"spec":{"database":{"highAvailability":{"replicas":3}}}}"#, "single")?;
    ensure!(added.contains("spec.database.highAvailability: set at creation only"), "{added}");
    env.kubectl(&["-n", ns, "delete", "clinicplatform", "single", "--wait=false"])?;
    Ok(())
}

fn tls_certificate_and_compliance_evidence(env: &Env) -> Result<()> {
    let ns = "e2e-tls";
    env.namespace(ns)?;
    env.clinic(
        ns,
        "tls",
        "  ingress:\n    host: emr.clinic-tls.example.fr\n    tls:\n      issuerRef:\n        name: letsencrypt\n  database:\n    tls:\n      issuerRef: {name: clinic-ca, kind: Issuer}\n  openmrs:\n    backend:\n      tls: {enabled: true, issuerRef: {name: clinic-ca, kind: Issuer}}\n",
    )?;
    env.wait_ready(ns, "tls", wait())?;
    // Accepted by cert-manager's real schema.
    eventually("Certificate created", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", ns, "get", "certificates.cert-manager.io", "tls-tls"]).is_ok())
    })?;
    let cert = env.json(&["-n", ns, "get", "certificates.cert-manager.io", "tls-tls"])?;
    ensure!(
        cert["spec"]["dnsNames"][0] == "emr.clinic-tls.example.fr"
            && cert["spec"]["issuerRef"]["kind"] == "ClusterIssuer",
        "{}",
        cert["spec"]
    );
    // MariaDB's, from the clinic's own Issuer, for every name its clients use.
    let database = env.json(&["-n", ns, "get", "certificates.cert-manager.io", "tls-db-tls"])?;
    ensure!(
        database["spec"]["dnsNames"][0] == "tls-mariadb"
            && database["spec"]["ipAddresses"][0] == "127.0.0.1"
            && database["spec"]["secretName"] == "tls-db-tls"
            && database["spec"]["issuerRef"]["kind"] == "Issuer",
        "{}",
        database["spec"]
    );
    // The backend's, from the same Issuer, for its Service's names.
    let backend = env.json(&["-n", ns, "get", "certificates.cert-manager.io", "tls-backend-tls"])?;
    ensure!(
        backend["spec"]["dnsNames"][0] == "tls-backend"
            && backend["spec"]["secretName"] == "tls-backend-tls"
            && backend["spec"]["issuerRef"]["kind"] == "Issuer",
        "{}",
        backend["spec"]
    );
    ensure!(
        env.kubectl(&["-n", ns, "get", "secret", "tls-db-ca"]).is_err(),
        "a CA of the operator's own while cert-manager issues the certificate"
    );
    let ingress = env.json(&["-n", ns, "get", "ingress", "tls"])?;
    ensure!(ingress["spec"]["tls"][0]["secretName"] == "tls-tls");
    let conf = env.json(&["-n", ns, "get", "configmap", "tls-gateway-nginx"])?;
    ensure!(
        conf["data"]["nginx.conf"].as_str().is_some_and(|c| c.contains("Strict-Transport-Security")),
        "no HSTS behind TLS"
    );
    // The Ingress taken away: its Certificate goes with the next check (a clinic without one
    // reads no Certificate otherwise).
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "clinicplatform",
        "tls",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ingress"}]"#,
    ])?;
    eventually("the Ingress's Certificate removed", Duration::from_secs(60), || {
        Ok(env.kubectl(&["-n", ns, "get", "certificates.cert-manager.io", "tls-tls"]).is_err()
            && env.kubectl(&["-n", ns, "get", "ingress", "tls"]).is_err())
    })?;
    ensure!(
        env.kubectl(&["-n", ns, "get", "certificates.cert-manager.io", "tls-backend-tls"]).is_ok(),
        "the backend's Certificate went too"
    );

    // Every control holding: TLS, backups within the RPO, residency in a region the platform's
    // policy approves, data on a StorageClass that encrypts (its parameters; the policy
    // attests it too).
    let full = "e2e-compliant";
    env.namespace(full)?;
    env.clinic(full, "ok", "  ingress:\n    host: emr.clinic-ok.example.fr\n    tls:\n      secretName: ok-cert\n  residency:\n    regions: [fr-par]\n  database:\n    storage: {size: 1Gi, storageClassName: encrypted-ssd}\n  openmrs:\n    backend:\n      storage: {size: 1Gi, storageClassName: encrypted-ssd}\n      tls: {enabled: true}\n  security:\n    mtls: true\n")?;
    env.wait_ready(full, "ok", wait())?;
    env.velero_backup(full, "ok", "e2e-compliant-ok-20261121020000", "Completed", 1)?;
    env.poke(full, "ok")?;
    eventually("Compliant=True", Duration::from_secs(40), || {
        Ok(env.condition(full, "ok", "Compliant")?.is_some_and(|c| c["status"] == "True"))
    })?;
    let cp = env.json(&["-n", full, "get", "clinicplatform", "ok"])?;
    let c = &cp["status"]["compliance"];
    for control in [
        "podSecurityRestricted",
        "defaultDenyNetwork",
        "tlsAtEdge",
        "backupsWithinRpo",
        "dataResidency",
        "encryptionAtRest",
        "databaseEncrypted",
        "databaseTls",
        "mutualTls",
        "backendTls",
    ] {
        ensure!(c[control] == true, "{control} does not hold: {c}");
    }
    // mutualTls: Istio's released schema admitted a STRICT PeerAuthentication and an
    // AuthorizationPolicy per component, and every pod template joins the ambient mesh.
    for component in ["mariadb", "backend", "frontend", "gateway"] {
        let name = format!("ok-{component}");
        let peer = env.json(&["-n", full, "get", "peerauthentications.security.istio.io", &name])?;
        ensure!(peer["spec"]["mtls"]["mode"] == "STRICT", "{name}: {}", peer["spec"]);
        let authz = env.json(&["-n", full, "get", "authorizationpolicies.security.istio.io", &name])?;
        ensure!(authz["spec"]["action"] == "ALLOW", "{name}: {}", authz["spec"]);
    }
    for (kind, name) in [
        ("statefulset", "ok-mariadb"),
        ("statefulset", "ok-backend"),
        ("deployment", "ok-frontend"),
        ("deployment", "ok-gateway"),
    ] {
        let workload = env.json(&["-n", full, "get", kind, name])?;
        ensure!(
            workload["spec"]["template"]["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient",
            "{name} does not join the mesh"
        );
    }
    // The clinic's own CA signed MariaDB's certificate; its end is in the status and on
    // MariaDB's pod template.
    let not_after = cp["status"]["databaseCertificate"]["notAfter"].as_str().unwrap_or_default().to_string();
    let tls = env.json(&["-n", full, "get", "secret", "ok-db-tls"])?;
    ensure!(
        tls["type"] == "kubernetes.io/tls"
            && tls["metadata"]["annotations"]["clinic.audioprothese.fr/not-after"] == not_after.as_str(),
        "certificate Secret {} against the status' {not_after}",
        tls["metadata"]
    );
    env.kubectl(&["-n", full, "get", "secret", "ok-db-ca"])?;
    // The same CA signed the backend's certificate, recorded in the status too.
    let backend_tls = env.json(&["-n", full, "get", "secret", "ok-backend-tls"])?;
    let signer = |secret: &serde_json::Value| {
        secret["metadata"]["annotations"]["clinic.audioprothese.fr/ca-sha256"].clone()
    };
    ensure!(
        signer(&backend_tls) == signer(&tls) && signer(&tls).is_string(),
        "the backend's certificate is not signed by the clinic's CA: {}",
        backend_tls["metadata"]
    );
    ensure!(
        cp["status"]["backendCertificate"]["notAfter"]
            == backend_tls["metadata"]["annotations"]["clinic.audioprothese.fr/not-after"],
        "status.backendCertificate: {}",
        cp["status"]["backendCertificate"]
    );
    let mariadb = env.json(&["-n", full, "get", "statefulset", "ok-mariadb"])?;
    ensure!(
        mariadb["spec"]["template"]["metadata"]["annotations"]["clinic.audioprothese.fr/db-tls-not-after"]
            == not_after.as_str(),
        "MariaDB's pod template does not carry the certificate"
    );
    // A tenant's own word is no evidence: `storageEncrypted: true` on an unencrypted class, and a
    // residency region the policy does not approve, which is refused outright.
    let claims = "e2e-claims";
    env.namespace(claims)?;
    env.clinic(claims, "says", "  ingress:\n    host: emr.clinic-says.example.fr\n    tls:\n      secretName: says-cert\n  residency:\n    regions: [fr-par]\n  security:\n    storageEncrypted: true\n")?;
    env.wait_ready(claims, "says", wait())?;
    let says = env.json(&["-n", claims, "get", "clinicplatform", "says"])?;
    ensure!(
        says["status"]["compliance"]["encryptionAtRest"] == false,
        "storageEncrypted: true counted as encryption: {}",
        says["status"]["compliance"]
    );
    env.clinic(claims, "abroad", "  residency:\n    regions: [us-east-1]\n")?;
    eventually("residency outside the policy refused", Duration::from_secs(60), || {
        Ok(env.condition(claims, "abroad", "Degraded")?.is_some_and(|c| {
            c["reason"] == "NotAllowed"
                && c["message"].as_str().is_some_and(|m| m.contains("spec.residency.regions[0]"))
        }))
    })?;
    // The minimal clinic lacks TLS, residency, encryption and backups: not compliant, and says why.
    let minimal = env.condition("e2e-tls", "tls", "Compliant")?.context("no Compliant")?;
    ensure!(
        minimal["status"] == "False" && minimal["message"].as_str().is_some_and(|m| m.contains("residency")),
        "{minimal}"
    );
    let wide = env.kubectl(&["get", "clinicplatforms", "-A", "-o", "wide"])?;
    ensure!(wide.contains("COMPLIANT"), "no Compliant column:\n{wide}");
    let line =
        wide.lines().find(|l| l.starts_with("e2e-compliant")).context("clinic missing from the list")?;
    ensure!(
        line.contains("True    True") || line.split_whitespace().filter(|w| *w == "True").count() >= 2,
        "{line}"
    );
    Ok(())
}

/// The platform's Gateway of the suite's policy (`examples/platform-values.yaml`), declared as a
/// platform team would; no controller runs for its class here, so the scenario answers for it.
const PLATFORM_GATEWAY: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gateway-system\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: e2e\nspec:\n  controllerName: example.net/e2e-gateway-controller\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: public\n  namespace: gateway-system\nspec:\n  gatewayClassName: e2e\n  listeners:\n    - name: https\n      protocol: HTTPS\n      port: 443\n      hostname: \"*.example.fr\"\n      tls:\n        mode: Terminate\n        certificateRefs: [{name: wildcard-example-fr}]\n      allowedRoutes: {namespaces: {from: All}}\n    - name: http\n      protocol: HTTP\n      port: 80\n      allowedRoutes: {namespaces: {from: All}}\n";

/// Writes what a Gateway controller writes in an HTTPRoute's status for the platform's Gateway.
fn answer_for_gateway(
    env: &Env,
    ns: &str,
    route: &str,
    listener: &str,
    accepted: (&str, &str),
) -> Result<()> {
    let generation =
        env.json(&["-n", ns, "get", "httproute", route])?["metadata"]["generation"].as_i64().unwrap_or(1);
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let condition = |type_: &str, status: &str, reason: &str| serde_json::json!({"type": type_, "status": status, "reason": reason, "message": format!("{reason} by the e2e controller"), "observedGeneration": generation, "lastTransitionTime": now});
    let status = serde_json::json!({"status": {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": "public", "sectionName": listener},
        "controllerName": "example.net/e2e-gateway-controller",
        "conditions": [condition("Accepted", accepted.0, accepted.1), condition("ResolvedRefs", "True", "ResolvedRefs")],
    }]}});
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "httproute",
        route,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;
    Ok(())
}

/// A clinic published on the platform's Gateway: its HTTPRoutes meet Gateway API's released
/// schema, attach to the listeners the policy declares, and the Gateway's answer is what
/// `RouteAccepted` and `Ready` say; a Gateway outside the policy is refused before any write.
fn gateway_route_is_accepted_and_refusals_are_told(env: &Env) -> Result<()> {
    let ns = "e2e-route";
    env.plane.apply_yaml(PLATFORM_GATEWAY)?;
    env.namespace(ns)?;
    env.clinic(ns, "rt", "  route:\n    host: emr.clinic-rt.example.fr\n")?;
    eventually("HTTPRoutes created", Duration::from_secs(60), || {
        Ok(env.kubectl(&["-n", ns, "get", "httproute", "rt", "rt-redirect"]).is_ok())
    })?;
    let route = env.json(&["-n", ns, "get", "httproute", "rt"])?;
    ensure!(
        route["spec"]["parentRefs"][0]["sectionName"] == "https"
            && route["spec"]["hostnames"][0] == "emr.clinic-rt.example.fr"
            && route["spec"]["rules"][0]["backendRefs"][0]["name"] == "rt-gateway",
        "{}",
        route["spec"]
    );
    let redirect = env.json(&["-n", ns, "get", "httproute", "rt-redirect"])?;
    ensure!(
        redirect["spec"]["rules"][0]["filters"][0]["requestRedirect"]["scheme"] == "https",
        "{}",
        redirect["spec"]
    );
    ensure!(env.kubectl(&["-n", ns, "get", "ingress", "rt"]).is_err(), "an Ingress beside the route");
    // No controller has answered: the clinic says so, and is not Ready however its pods are.
    env.wait_condition(ns, "rt", ("RouteAccepted", "False", "AwaitingGateway"), Duration::from_secs(60))?;
    answer_for_gateway(env, ns, "rt", "https", ("False", "NotAllowedByListeners"))?;
    answer_for_gateway(env, ns, "rt-redirect", "http", ("True", "Accepted"))?;
    eventually("the refusal is told", Duration::from_secs(60), || {
        Ok(env.condition(ns, "rt", "RouteAccepted")?.is_some_and(|c| {
            c["reason"] == "NotAccepted"
                && c["message"].as_str().is_some_and(|m| m.contains("NotAllowedByListeners"))
        }))
    })?;
    let ready = env.condition(ns, "rt", "Ready")?.context("no Ready")?;
    ensure!(ready["status"] == "False", "Ready with a refused route: {ready}");
    let described = env.kubectl(&["-n", ns, "describe", "clinicplatform", "rt"])?;
    ensure!(described.contains("NotAllowedByListeners"), "kubectl describe does not say why:\n{described}");
    // The platform team lets the route in: within a minute the clinic is Ready at its host.
    answer_for_gateway(env, ns, "rt", "https", ("True", "Accepted"))?;
    env.wait_condition(ns, "rt", ("RouteAccepted", "True", "Accepted"), Duration::from_secs(90))?;
    env.wait_ready(ns, "rt", wait())?;
    let cp = env.json(&["-n", ns, "get", "clinicplatform", "rt"])?;
    ensure!(
        cp["status"]["url"] == "https://emr.clinic-rt.example.fr/openmrs/spa/home",
        "{}",
        cp["status"]["url"]
    );
    ensure!(cp["status"]["compliance"]["tlsAtEdge"] == true, "{}", cp["status"]["compliance"]);
    let np = env.json(&["-n", ns, "get", "networkpolicy", "rt-gateway"])?;
    ensure!(
        np.to_string().contains("gateway-system"),
        "the Gateway's proxies cannot reach the gateway: {np}"
    );

    // A Gateway the policy does not list is refused before anything is written.
    env.clinic(ns, "elsewhere", "  route:\n    host: emr.clinic-else.example.fr\n    gateway: {namespace: gateway-system, name: private}\n")?;
    eventually("an unlisted Gateway refused", Duration::from_secs(60), || {
        Ok(env.condition(ns, "elsewhere", "Degraded")?.is_some_and(|c| {
            c["reason"] == "NotAllowed"
                && c["message"].as_str().is_some_and(|m| m.contains("spec.route.gateway"))
        }))
    })?;
    ensure!(
        env.kubectl(&["-n", ns, "get", "httproute", "elsewhere"]).is_err(),
        "a route for a refused Gateway"
    );
    Ok(())
}

fn namespaced_mode_runs_with_roles_only(_env: &Env) -> Result<()> {
    let plane = ControlPlane::start()?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ward-a\n  labels: {pod-security.kubernetes.io/enforce: restricted}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ward-b\n  labels: {pod-security.kubernetes.io/enforce: restricted}\n")?;
    let role = workspace_root().join("charts/clinic-operator/files/role-namespaced.yaml");
    let kubeconfig = plane.namespaced_service_account_kubeconfig(
        &role,
        &["ward-a"],
        "clinic-system",
        "clinic-operator",
    )?;
    let ledger_role = workspace_root().join("charts/clinic-operator/files/role-ledger.yaml");
    plane.bind_role(&ledger_role, &["clinic-system"], "clinic-system", "clinic-operator")?;
    let operator = OperatorProcess::start_with(
        &operator::binary()?,
        &kubeconfig,
        &plane.dir.join("logs"),
        &["--watch-namespaces", "ward-a"],
    )?;
    plane.apply_yaml("apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: a\n  namespace: ward-a\nspec: {}\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: b\n  namespace: ward-b\nspec: {}\n")?;
    plane
        .kubectl(&["-n", "ward-a", "wait", "--for=condition=Ready", "clinicplatform/a", "--timeout=120s"])
        .with_context(|| tail(&operator.output(), 20))?;
    let cp: Value = serde_json::from_str(&plane.kubectl(&[
        "-n",
        "ward-a",
        "get",
        "clinicplatform",
        "a",
        "-o",
        "json",
    ])?)?;
    let security = cp["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "SecurityEnforced")
        .cloned()
        .unwrap_or_default();
    ensure!(security["status"] == "True", "SecurityEnforced in namespaced mode: {security}");
    // Its ledger, in its own namespace, through the chart's Role only.
    eventually("the ledger written with the ledger's Role", Duration::from_secs(60), || {
        let ledger = plane.kubectl(&[
            "-n",
            "clinic-system",
            "get",
            "configmap",
            "clinic-operator-verified",
            "-o",
            "json",
        ]);
        Ok(ledger.is_ok_and(|l| {
            serde_json::from_str::<Value>(&l).is_ok_and(|v| v["data"]["ward-a.a"].is_string())
        }))
    })
    .with_context(|| tail(&operator.output(), 20))?;
    // The unwatched namespace is left alone...
    std::thread::sleep(Duration::from_secs(3));
    let b = plane.kubectl(&[
        "-n",
        "ward-b",
        "get",
        "statefulsets,secrets",
        "-l",
        "app.kubernetes.io/instance=b",
        "-o",
        "name",
    ])?;
    ensure!(b.trim().is_empty(), "the operator touched an unwatched namespace: {b}");
    // ...and the operator could not read it even if it tried.
    let can = |verb: &str, resource: &str, ns: &str| {
        plane
            .kubectl_as(&kubeconfig, &["auth", "can-i", verb, resource, "-n", ns])
            .map(|o| o.trim() == "yes")
            .unwrap_or(false)
    };
    ensure!(
        can("get", "secrets", "ward-a") && can("create", "statefulsets.apps", "ward-a"),
        "missing permission in the watched namespace"
    );
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "statefulsets.apps"),
        ("list", "clinicplatforms.clinic.audioprothese.fr"),
    ] {
        ensure!(
            !can(verb, resource, "ward-b"),
            "namespaced mode can {verb} {resource} in an unwatched namespace"
        );
    }
    ensure!(
        plane
            .kubectl_as(&kubeconfig, &["auth", "can-i", "list", "secrets", "-A"])
            .map(|o| o.trim() == "no")
            .unwrap_or(true),
        "cluster-wide secrets readable"
    );
    ensure!(
        !operator.output().contains("\"level\":\"ERROR\""),
        "errors in namespaced mode:\n{}",
        tail(&operator.output(), 20)
    );
    Ok(())
}

fn leader_election_one_active_then_failover(_env: &Env) -> Result<()> {
    let plane = ControlPlane::start()?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    let kubeconfig = plane.operator_kubeconfig()?;
    let lease_role = workspace_root().join("charts/clinic-operator/files/role-leader-election.yaml");
    plane.kubectl(&[
        "-n",
        "clinic-system",
        "apply",
        "--server-side",
        "-f",
        &lease_role.display().to_string(),
    ])?;
    plane.kubectl(&[
        "-n",
        "clinic-system",
        "create",
        "rolebinding",
        "clinic-operator-leader-election",
        "--role=clinic-operator-leader-election",
        "--serviceaccount=clinic-system:clinic-operator",
    ])?;
    let binary = operator::binary()?;
    let args = |name: &'static str| {
        ["--leader-election", "--leader-election-namespace", "clinic-system", "--pod-name", name]
    };
    let logs = plane.dir.join("logs");
    std::fs::create_dir_all(logs.join("a"))?;
    std::fs::create_dir_all(logs.join("b"))?;
    let mut a = OperatorProcess::start_with(&binary, &kubeconfig, &logs.join("a"), &args("replica-a"))?;
    std::thread::sleep(Duration::from_secs(2));
    let b = OperatorProcess::start_with(&binary, &kubeconfig, &logs.join("b"), &args("replica-b"))?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: one\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: one\n  namespace: one\nspec: {}\n")?;
    plane.kubectl(&["-n", "one", "wait", "--for=condition=Ready", "clinicplatform/one", "--timeout=120s"])?;
    let reconciled = |op: &OperatorProcess| op.output().contains("\"message\":\"reconciled\"");
    // The log line follows the status write that `kubectl wait` saw: give it a moment.
    eventually("the leader's reconcile logged", Duration::from_secs(10), || Ok(reconciled(&a)))?;
    ensure!(!reconciled(&b), "the standby reconciled while the leader was alive");
    ensure!(
        b.output().contains("waiting to lead") && !b.output().contains("\"message\":\"leading\""),
        "replica b is not a standby"
    );
    for op in [&a, &b] {
        let (code, body) = op.http_get("/readyz")?;
        ensure!(code == 200, "a replica is not ready: {body}");
    }
    let holder = plane.kubectl(&[
        "-n",
        "clinic-system",
        "get",
        "lease",
        "clinic-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    ensure!(holder == "replica-a", "lease held by {holder}");
    // The leader dies without releasing anything; the standby takes over within the lease time.
    let killed = Instant::now();
    a.kill();
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: two\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: two\n  namespace: two\nspec: {}\n")?;
    plane
        .kubectl(&["-n", "two", "wait", "--for=condition=Ready", "clinicplatform/two", "--timeout=90s"])
        .with_context(|| tail(&b.output(), 20))?;
    eprintln!(
        "    standby took over and converged a new clinic {:.0}s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    ensure!(reconciled(&b), "the standby never reconciled");
    Ok(())
}

/// The API server runs with the chart's audit rules (and a catch-all recording every other
/// write's body, see `cluster::audit_policy_with_catch_all`): a ClinicPlatform change made by a
/// GitOps identity is in the log with who made it and what was sent, the docs' queries find it,
/// Secret events carry no body, and no generated password appears anywhere in the log.
fn audit_log_records_who_changed_a_clinic_and_no_password(env: &Env) -> Result<()> {
    let (ns, name) = ("e2e-audit", "audit");
    env.namespace(ns)?;
    env.clinic(ns, name, "  {}")?;
    env.wait_ready(ns, name, wait())?;
    // A GitOps controller's identity, allowed to change ClinicPlatforms here and nothing else.
    env.plane.apply_yaml(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: gitops, namespace: {ns}}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: gitops, namespace: {ns}}}\nrules:\n- apiGroups: [clinic.audioprothese.fr]\n  resources: [clinicplatforms]\n  verbs: [get, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: gitops, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: gitops}}\nsubjects:\n- {{kind: ServiceAccount, name: gitops, namespace: {ns}}}\n"
    ))?;
    let gitops = env.plane.token_kubeconfig(ns, "gitops")?;
    let change = env.plane.dir.join("audit-change.yaml");
    std::fs::write(
        &change,
        format!(
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  backup: {{schedule: \"17 2 * * *\"}}\n"
        ),
    )?;
    env.plane.kubectl_as(
        &gitops,
        &["apply", "--server-side", "--field-manager=gitops", "-f", &change.display().to_string()],
    )?;
    let log_path = env.plane.audit_log();
    let events = || -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(&log_path)?;
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    };
    let who = format!("system:serviceaccount:{ns}:gitops");
    let of_clinic = |e: &Value| {
        e["objectRef"]["resource"] == "clinicplatforms"
            && e["objectRef"]["namespace"] == ns
            && e["objectRef"]["name"] == name
    };
    eventually("the gitops change in the audit log", Duration::from_secs(30), || {
        Ok(events()?.iter().any(|e| {
            of_clinic(e)
                && e["objectRef"]["subresource"].is_null()
                && e["verb"] == "patch"
                && e["user"]["username"] == who.as_str()
                && e["level"] == "RequestResponse"
                && e["stage"] == "ResponseComplete"
                && e["requestObject"]["spec"]["backup"]["schedule"] == "17 2 * * *"
                && e["responseObject"]["metadata"]["uid"].is_string()
        }))
    })?;
    let events = events()?;
    // The operator's status writes are there, without their bodies.
    let status_writes: Vec<&Value> =
        events.iter().filter(|e| of_clinic(e) && e["objectRef"]["subresource"] == "status").collect();
    ensure!(!status_writes.is_empty(), "no status write of the clinic in the audit log");
    for e in &status_writes {
        ensure!(
            e["level"] == "Metadata" && e["requestObject"].is_null() && e["responseObject"].is_null(),
            "a status write is recorded with its body: {e}"
        );
        ensure!(
            e["user"]["username"] == "system:serviceaccount:clinic-system:clinic-operator",
            "a status write is not recorded as the operator's ServiceAccount: {}",
            e["user"]
        );
    }
    // The Secrets the operator created are recorded, at Metadata.
    let secret_writes: Vec<&Value> = events
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "secrets" && e["objectRef"]["namespace"] == ns)
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "patch" | "update")))
        .collect();
    ensure!(!secret_writes.is_empty(), "no write of the clinic's Secrets in the audit log");
    for e in events.iter().filter(|e| e["objectRef"]["resource"] == "secrets") {
        ensure!(
            e["level"] == "Metadata" && e["requestObject"].is_null() && e["responseObject"].is_null(),
            "a Secret event is recorded with its body: {}",
            e["auditID"]
        );
    }
    // The docs' queries, as written.
    let vars = [
        ("AUDIT_LOG".to_string(), log_path.display().to_string()),
        ("CLINIC_NS".to_string(), ns.to_string()),
        ("CLINIC".to_string(), name.to_string()),
    ];
    let tools = std::env::var("CLINIC_TOOLS_BIN").unwrap_or_default();
    let out = user_shell(&doc_block("docs/audit.md", "who-changed-a-clinic")?, &env.plane, &tools, &vars)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && stdout.lines().any(|l| l.contains(&format!("\"who\":\"{who}\"")) && l.contains("17 2 * * *")),
        "who-changed-a-clinic does not show the gitops change:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = user_shell(
        &doc_block("docs/audit.md", "no-secret-body-in-the-audit-log")?,
        &env.plane,
        &tools,
        &vars,
    )?;
    ensure!(
        out.status.success() && out.stdout.is_empty(),
        "no-secret-body-in-the-audit-log printed {} (stderr {})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // No generated password anywhere in the whole log: in clear, base64-encoded (as in a
    // Secret's body) or JSON-escaped (as in any string of an event).
    let text = std::fs::read_to_string(&log_path)?;
    let secrets =
        env.json(&["get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=clinic-operator"])?;
    let mut checked = 0;
    for s in secrets["items"].as_array().into_iter().flatten() {
        for (key, encoded) in s["data"].as_object().into_iter().flatten() {
            let encoded = encoded.as_str().unwrap_or_default();
            let decoded = base64_decode(encoded);
            if decoded.len() < 16 {
                continue;
            }
            let escaped = serde_json::to_string(&decoded)?;
            for form in [decoded.as_str(), encoded, escaped.trim_matches('"')] {
                ensure!(
                    !text.contains(form),
                    "secret {}/{}:{key} appears in the audit log",
                    s["metadata"]["namespace"],
                    s["metadata"]["name"]
                );
            }
            checked += 1;
        }
    }
    ensure!(checked >= 3, "only {checked} generated values to look for: the clinic's Secrets are missing");
    eprintln!(
        "    audit log: {} events ({} KiB), {checked} generated values absent",
        events.len(),
        text.len() / 1024
    );
    Ok(())
}

fn missing_velero_namespace_does_not_break_the_platform(env: &Env) -> Result<()> {
    let ns = "e2e-nowhere";
    env.namespace(ns)?;
    env.clinic(ns, "nw", "  backup:\n    veleroNamespace: velero-does-not-exist\n")?;
    env.wait_ready(ns, "nw", wait())?;
    env.wait_condition(ns, "nw", ("BackupReady", "False", "ScheduleFailed"), Duration::from_secs(30))?;
    // For a person: the object, the cause in the API server's words, the field to look at.
    let backup = env.condition(ns, "nw", "BackupReady")?.context("no BackupReady")?;
    let message = backup["message"].as_str().unwrap_or_default();
    // The operator has rights only in the Velero namespaces the chart binds it in (the policy's
    // veleroNamespaces): elsewhere the API server answers 403 before it looks for the namespace.
    ensure!(
        message.contains("velero-does-not-exist")
            && message.contains("(HTTP 403 Forbidden)")
            && message.contains("spec.backup.veleroNamespace")
            && !message.contains("Status {"),
        "BackupReady does not say what is wrong and what to do: {message}"
    );
    ensure!(
        env.condition(ns, "nw", "Degraded")?.is_some_and(|c| c["status"] == "False"),
        "a backup problem degraded the platform"
    );
    Ok(())
}

fn monitoring_is_accepted_by_the_real_schemas(env: &Env) -> Result<()> {
    let ns = "e2e-monitoring";
    env.namespace(ns)?;
    env.namespace("grafana")?;
    env.clinic(ns, "mon", "  ingress:\n    host: emr.clinic-mon.example.fr\n    tls:\n      secretName: mon-cert\n  monitoring:\n    labels:\n      release: kube-prometheus-stack\n    prometheusNamespace: observability\n    dashboard:\n      namespace: grafana\n")?;
    env.wait_ready(ns, "mon", wait())?;
    eventually("MonitoringReady=True", Duration::from_secs(30), || {
        Ok(env.condition(ns, "mon", "MonitoringReady")?.is_some_and(|c| c["status"] == "True"))
    })?;
    // Written through the Prometheus Operator's real CRD schemas (v0.85).
    let monitor = env.json(&["-n", ns, "get", "servicemonitors.monitoring.coreos.com", "mon-metrics"])?;
    ensure!(monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack", "{}", monitor["metadata"]);
    ensure!(monitor["spec"]["endpoints"][0]["port"] == "metrics", "{}", monitor["spec"]);
    let rule = env.json(&["-n", ns, "get", "prometheusrules.monitoring.coreos.com", "mon-alerts"])?;
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    ensure!(alerts.len() >= 10 && alerts.contains(&"ClinicHigh5xxRate"), "{alerts:?}");
    // The ServiceMonitor finds both metrics Services, and their endpoints' pods run exporters.
    let services = env.json(&[
        "-n",
        ns,
        "get",
        "services",
        "-l",
        "clinic.audioprothese.fr/metrics=true,app.kubernetes.io/instance=mon",
    ])?;
    ensure!(services["items"].as_array().map(Vec::len) == Some(2), "{}", services["items"]);
    let db = env.json(&["-n", ns, "get", "pod", "mon-mariadb-0"])?;
    let containers: Vec<&str> = db["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(containers == ["mariadb", "mysqld-exporter"], "{containers:?}");
    // Only Prometheus' namespace reaches the exporter port.
    let policy = env.json(&["-n", ns, "get", "networkpolicy", "mon-mariadb"])?;
    let from_monitoring = policy["spec"]["ingress"].as_array().into_iter().flatten().any(|r| {
        r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "observability"
            && r["ports"][0]["port"] == 9104
    });
    ensure!(from_monitoring, "{}", policy["spec"]);

    // The dashboard went to Grafana's namespace, with the sidecar label.
    let outside_dashboard =
        format!("{}-dashboard", clinic_operator::desired::backup::outside_name(ns, "mon"));
    let dashboard = env.json(&["-n", "grafana", "get", "configmap", &outside_dashboard])?;
    ensure!(dashboard["metadata"]["labels"]["grafana_dashboard"] == "1", "{}", dashboard["metadata"]);

    // A deleted PrometheusRule, an edited ServiceMonitor are put back at once: they are watched,
    // and their change brings the clinic's next pass (nothing here pokes the ClinicPlatform).
    env.kubectl(&["-n", ns, "delete", "prometheusrules.monitoring.coreos.com", "mon-alerts"])?;
    let deleted = Instant::now();
    eventually("PrometheusRule put back", Duration::from_secs(20), || {
        Ok(env.kubectl(&["-n", ns, "get", "prometheusrules.monitoring.coreos.com", "mon-alerts"]).is_ok())
    })?;
    eprintln!("    PrometheusRule put back {:.1}s after its deletion", deleted.elapsed().as_secs_f64());
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "servicemonitors.monitoring.coreos.com",
        "mon-metrics",
        "--type=merge",
        "-p",
        r#"{"spec":{"endpoints":[{"port":"metrics","interval":"5m"}]}}"#,
    ])?;
    let edited = Instant::now();
    eventually("ServiceMonitor put back", Duration::from_secs(20), || {
        let monitor = env.json(&["-n", ns, "get", "servicemonitors.monitoring.coreos.com", "mon-metrics"])?;
        Ok(monitor["spec"]["endpoints"][0]["interval"] != "5m")
    })?;
    eprintln!("    ServiceMonitor put back {:.1}s after its edit", edited.elapsed().as_secs_f64());

    // Turning monitoring off removes the monitors and the sidecars and says so.
    env.merge_patch(ns, "clinicplatform", "mon", r#"{"spec":{"monitoring":{"enabled":false}}}"#)?;
    eventually("monitors removed", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", ns, "get", "servicemonitors.monitoring.coreos.com", "mon-metrics"]).is_err()
            && env.kubectl(&["-n", ns, "get", "service", "mon-mariadb-metrics"]).is_err())
    })?;
    let condition = env.condition(ns, "mon", "MonitoringReady")?.context("no MonitoringReady")?;
    ensure!(condition["reason"] == "Disabled", "{condition}");
    env.merge_patch(ns, "clinicplatform", "mon", r#"{"spec":{"monitoring":{"enabled":true}}}"#)?;
    eventually("monitors back", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", ns, "get", "servicemonitors.monitoring.coreos.com", "mon-metrics"]).is_ok())
    })?;

    // Moving the dashboard home removes the one in Grafana's namespace (it is on record in
    // status.outsideObjects); moving it back makes it again.
    let move_dashboard = |to: &str| {
        env.merge_patch(
            ns,
            "clinicplatform",
            "mon",
            &format!(r#"{{"spec":{{"monitoring":{{"dashboard":{{"namespace":{to}}}}}}}}}"#),
        )
    };
    move_dashboard("null")?;
    eventually("dashboard moved into the clinic's namespace", Duration::from_secs(30), || {
        let outside =
            env.json(&["-n", ns, "get", "clinicplatform", "mon"])?["status"]["outsideObjects"].clone();
        Ok(env.kubectl(&["-n", "grafana", "get", "configmap", &outside_dashboard]).is_err()
            && env.kubectl(&["-n", ns, "get", "configmap", "mon-dashboard"]).is_ok()
            && outside.as_array().is_some_and(|o| o.iter().all(|x| x["kind"] != "ConfigMap")))
    })?;
    move_dashboard("\"grafana\"")?;
    eventually("dashboard back in Grafana's namespace", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", "grafana", "get", "configmap", &outside_dashboard]).is_ok())
    })?;

    // Deleting the clinic removes the dashboard from Grafana's namespace (finalizer).
    env.kubectl(&["-n", ns, "delete", "clinicplatform", "mon", "--timeout=60s"])?;
    eventually("dashboard removed", Duration::from_secs(30), || {
        Ok(env.kubectl(&["-n", "grafana", "get", "configmap", &outside_dashboard]).is_err())
    })?;
    Ok(())
}

/// Every file under examples/ is applied as a user would; each clinic turns Ready with every
/// child `render` shows for it, and the Argo CD Application is accepted by Argo CD's own CRD.
fn every_example_is_applied_and_converges(env: &Env) -> Result<()> {
    // What the examples expect of a production cluster: an encrypting StorageClass, the clinics'
    // node pool, Grafana's namespace, Argo CD's namespace.
    env.plane.apply_yaml(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: encrypted-ssd\nprovisioner: {}\nparameters:\n  encrypted: \"true\"\nreclaimPolicy: Delete\nvolumeBindingMode: Immediate\n",
        clinic_operator_e2e::provisioner::PROVISIONER
    ))?;
    env.kubectl(&["label", "nodes", "--all", "node-pool=clinics", "--overwrite"])?;
    env.plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: argocd\n")?;
    let examples = workspace_root().join("examples");
    env.kubectl(&["apply", "-f", &examples.join("production.yaml").display().to_string()])?;
    env.kubectl(&["apply", "-R", "-f", &examples.join("fleet/clinics").display().to_string()])?;
    env.kubectl(&["apply", "-f", &examples.join("fleet/argocd/application.yaml").display().to_string()])?;
    let mut clinics =
        vec![("examples/production.yaml".to_string(), "clinic-lyon".to_string(), "lyon".to_string())];
    for entry in std::fs::read_dir(examples.join("fleet/clinics"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        clinics.push((format!("examples/fleet/clinics/{name}/clinic.yaml"), format!("clinic-{name}"), name));
    }
    ensure!(clinics.len() == 4, "{clinics:?}");
    for (file, ns, name) in &clinics {
        env.wait_ready(ns, name, wait())?;
        let expected = rendered_children(file, ns)?;
        let actual = env.children(ns, name)?;
        let missing: Vec<_> = expected.difference(&actual).collect();
        ensure!(missing.is_empty(), "{file}: children missing after Ready: {missing:?}");
        render_matches_the_cluster(env, file, ns)?;
    }
    // The production dashboard went to Grafana's namespace; its pods are pinned to fr-par.
    let dashboard =
        format!("{}-dashboard", clinic_operator::desired::backup::outside_name("clinic-lyon", "lyon"));
    env.kubectl(&["-n", "monitoring", "get", "configmap", &dashboard])?;
    let pod = env.json(&["-n", "clinic-lyon", "get", "pod", "lyon-mariadb-0"])?;
    ensure!(
        pod["spec"]["affinity"]["nodeAffinity"].to_string().contains("fr-par"),
        "no residency affinity: {}",
        pod["spec"]["affinity"]
    );
    env.kubectl(&["-n", "argocd", "get", "applications.argoproj.io", "clinic-fleet"])?;
    // The Schedule and the dashboard outside the namespace share one finalizer patch: no pass
    // may fail on a conflict between two patches of the same ClinicPlatform.
    let monitoring =
        env.condition("clinic-lyon", "lyon", "MonitoringReady")?.context("no MonitoringReady")?;
    ensure!(monitoring["status"] == "True", "{monitoring}");
    let conflicts: Vec<String> = env
        .operator()
        .output()
        .lines()
        .filter(|l| l.contains("\"clinic\":\"lyon\"") && l.contains("\"namespace\":\"clinic-lyon\""))
        .filter(|l| l.contains("not applied"))
        .map(String::from)
        .collect();
    ensure!(conflicts.is_empty(), "external objects failed: {conflicts:?}");
    Ok(())
}

/// What a user's shell carries into the documented commands: where things are and are cached.
const USER_SHELL_VARIABLES: &[&str] = &[
    "HOME",
    "USER",
    "LANG",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_JOBS",
    "GOPATH",
    "GOCACHE",
    "GOMODCACHE",
    "GOTOOLCHAIN",
    "GOFLAGS",
    "E2E_CACHE_DIR",
];

/// The oldest API server the docs and the chart's `kubeVersion` promise, built from its module:
/// the CRD installs and its CEL rules compile there, every example is admitted, and every object
/// `render` prints for every example is accepted (`--dry-run=server`, strict field validation).
/// Only etcd and that API server run: its controller-manager cannot be built here (see
/// e2e/cluster/floor/go.mod), so nothing converges — admission is what the floor is about.
fn oldest_supported_api_server_accepts_the_crd_and_children(_env: &Env) -> Result<()> {
    let chart: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        workspace_root().join("charts/clinic-operator/Chart.yaml"),
    )?)?;
    let promised = chart["kubeVersion"].as_str().context("Chart.yaml has a kubeVersion")?;
    let promised_minor = promised
        .trim_start_matches(">=")
        .split('.')
        .nth(1)
        .context("kubeVersion is >=1.MINOR.PATCH")?
        .to_string();
    let dir = std::env::temp_dir().join(format!("clinic-e2e-floor-{}", std::process::id()));
    let options =
        cluster::Options { api_server_only: Some(cluster::floor_api_server()?), ..Default::default() };
    let plane = ControlPlane::start_with(&cluster::binaries()?, &dir, options)?;
    let version: Value = serde_json::from_str(&plane.kubectl(&["version", "-o", "json"])?)?;
    let minor =
        version["serverVersion"]["minor"].as_str().unwrap_or_default().trim_end_matches('+').to_string();
    ensure!(
        minor == promised_minor,
        "the floor API server is 1.{minor}, the chart promises {promised}: build the one it promises"
    );
    plane.install_crds(&cluster::upstream_crds()?)?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    let mut examples: Vec<String> =
        ["examples/minimal.yaml", "examples/production.yaml", "examples/gateway.yaml"]
            .map(String::from)
            .into();
    for entry in std::fs::read_dir(workspace_root().join("examples/fleet/clinics"))? {
        examples.push(format!("examples/fleet/clinics/{}/clinic.yaml", entry?.file_name().to_string_lossy()));
    }
    let mut problems = Vec::new();
    for example in &examples {
        // Admitted as written (its namespace and its ClinicPlatform, CEL rules and all).
        if let Err(e) = plane.kubectl(&["apply", "-f", &workspace_root().join(example).display().to_string()])
        {
            problems.push(format!("{example}: refused: {e}"));
            continue;
        }
        let objects = rendered_objects(example, "default")?;
        // Namespaces the children live in outside the clinic's (Velero's, Grafana's).
        for namespace in
            objects.iter().filter_map(|o| o["metadata"]["namespace"].as_str()).collect::<BTreeSet<_>>()
        {
            plane
                .apply_yaml(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"))?;
        }
        let rendered = clinic_operator::render::render_with(
            &std::fs::read_to_string(workspace_root().join(example))?,
            "default",
            &platform_policy()?,
        )?;
        let path = plane.dir.join("rendered.yaml");
        std::fs::write(&path, rendered)?;
        if let Err(e) = plane.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=clinic-operator",
            "--dry-run=server",
            "-f",
            &path.display().to_string(),
        ]) {
            problems.push(format!("{example}: a child is refused: {e}"));
        }
        eprintln!("    floor 1.{minor}: {example} and its {} objects accepted", objects.len());
    }
    ensure!(problems.is_empty(), "on Kubernetes 1.{minor}:\n{}", problems.join("\n"));
    Ok(())
}

/// Runs `script` under `bash -euo pipefail` from the workspace root as in a user's shell (not the
/// test harness's environment: the variables `cargo test` sets for its tests would make the
/// documented `cargo`/`make` commands rebuild everything), against `plane`, with kubectl and
/// the check tools (helm) on the PATH.
fn user_shell(
    script: &str,
    plane: &ControlPlane,
    tools: &str,
    extra_env: &[(String, String)],
) -> Result<std::process::Output> {
    let mut command = std::process::Command::new("bash");
    command.args(["-euo", "pipefail", "-c", script]).current_dir(workspace_root()).env_clear();
    for (key, value) in std::env::vars_os() {
        if USER_SHELL_VARIABLES.contains(&key.to_string_lossy().as_ref()) {
            command.env(&key, value);
        }
    }
    let path = format!("{}:{tools}:{}", plane.bin.display(), std::env::var("PATH").unwrap_or_default());
    command.env("KUBECONFIG", &plane.kubeconfig).env("PATH", path);
    for (key, value) in extra_env {
        command.env(key, value);
    }
    Ok(command.stdin(std::process::Stdio::null()).output()?)
}

/// Runs the block `name` of a doc page as written, in a user's shell against the suite's
/// cluster, with `vars` set (the page names them: `$CLINIC_NS`...).
fn run_doc_block(env: &Env, file: &str, name: &str, vars: &[(String, String)]) -> Result<()> {
    let script = doc_block(file, name)?;
    let tools = std::env::var("CLINIC_TOOLS_BIN").unwrap_or_default();
    let out = user_shell(&script, &env.plane, &tools, vars)?;
    ensure!(
        out.status.success(),
        "block `{name}` of {file} failed:\n{script}--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The kind workflow's steps that need no Docker, run as written against a control plane of
/// their own: the upstream CRDs, `helm install`, the examples, the minimal clinic Ready, and the
/// e2e scenarios it selects, attached (E2E_KUBECONFIG) as on GitHub. The chart's Deployment is
/// placed on a kwok node where no container runs, so the operator runs here as the chart's
/// ServiceAccount; the image build, kind itself and the busybox probe are left to GitHub.
fn kind_workflow_steps_pass_locally(_env: &Env) -> Result<()> {
    let workflow: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        workspace_root().join(".github/workflows/e2e-kind.yml"),
    )?)?;
    let steps = workflow["jobs"]["kind"]["steps"].as_sequence().context("the workflow has steps")?;
    let step = |name: &str| {
        steps.iter().find(|s| s["name"] == name).with_context(|| format!("the workflow has no step `{name}`"))
    };
    let tools = std::env::var("CLINIC_TOOLS_BIN").context("CLINIC_TOOLS_BIN (helm) is set by `make test`")?;
    let plane = ControlPlane::start()?;
    let mut operator = None;
    for name in [
        "Upstream CRDs (the pinned releases of e2e/cluster/crds.sh)",
        "helm install",
        "Apply the examples",
        "The minimal clinic turns Ready with real containers",
        "e2e scenarios against the kind cluster",
    ] {
        let step = step(name)?;
        let script = step["run"].as_str().with_context(|| format!("step `{name}` has no run"))?;
        let mut extra_env: Vec<(String, String)> = step["env"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let value = v.as_str().map(String::from).or_else(|| v.as_u64().map(|n| n.to_string()))?;
                Some((k.as_str()?.to_string(), value))
            })
            .collect();
        for (key, value) in &mut extra_env {
            if key == "E2E_KUBECONFIG" {
                *value = plane.kubeconfig.display().to_string();
            }
        }
        if name == "Apply the examples" {
            let kubeconfig = plane.token_kubeconfig("clinic-system", "clinic-operator")?;
            operator =
                Some(OperatorProcess::start(&operator::binary()?, &kubeconfig, &plane.dir.join("logs"))?);
        }
        let started = Instant::now();
        let out = user_shell(script, &plane, &tools, &extra_env)?;
        let operator_log =
            operator.as_ref().map(|o: &OperatorProcess| tail(&o.output(), 20)).unwrap_or_default();
        ensure!(
            out.status.success(),
            "kind workflow step `{name}` failed:\n{script}--- stdout\n{}\n--- stderr\n{}\n--- operator\n{operator_log}",
            tail(&String::from_utf8_lossy(&out.stdout), 30),
            tail(&String::from_utf8_lossy(&out.stderr), 30),
        );
        eprintln!("    kind workflow: step `{name}` ran in {:.1}s", started.elapsed().as_secs_f64());
    }
    drop(operator);
    Ok(())
}

/// The commands of `docs/getting-started.md`, exactly as written, in order, on a control plane
/// of their own with nothing installed (a new user's cluster): every block marked
/// `<!-- test: NAME -->` runs under `bash -euo pipefail`; every other block says why it cannot.
fn getting_started_runs_as_written(_env: &Env) -> Result<()> {
    let blocks = doc_blocks("docs/getting-started.md")?;
    let plane = ControlPlane::start()?;
    let tools = std::env::var("CLINIC_TOOLS_BIN").context("CLINIC_TOOLS_BIN (helm) is set by `make test`")?;
    let demo_running = std::fs::read_to_string(workspace_root().join(".e2e/demo/pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<i32>().ok())
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
    let mut operator = None;
    let mut ran = Vec::new();
    // The `demo` block ends with `make demo-down`, which a failing `make demo` never reaches:
    // whatever it started is stopped when this scenario ends, however it ends.
    struct DemoDown(bool);
    impl Drop for DemoDown {
        fn drop(&mut self) {
            if self.0 {
                let _ = std::process::Command::new("make")
                    .arg("-C")
                    .arg(workspace_root())
                    .arg("demo-down")
                    .stdout(std::process::Stdio::null())
                    .status();
            }
        }
    }
    let mut _demo_down = DemoDown(false);
    for (name, script) in blocks {
        let Some(name) = name else { continue };
        if name == "demo" && demo_running {
            // `make demo-down` would stop the developer's own demo.
            eprintln!("    getting started: block `demo` not run: a `make demo` is running");
            continue;
        }
        if name == "demo" {
            _demo_down = DemoDown(true);
        }
        if name == "first-clinic" {
            // The chart's Deployment is placed on a kwok node, where no container runs: the
            // operator runs here instead, as the ServiceAccount and RBAC the chart installed.
            let kubeconfig = plane.token_kubeconfig("clinic-system", "clinic-operator")?;
            operator =
                Some(OperatorProcess::start(&operator::binary()?, &kubeconfig, &plane.dir.join("logs"))?);
        }
        let started = Instant::now();
        let out = user_shell(&script, &plane, &tools, &[])?;
        let operator_log =
            operator.as_ref().map(|o: &OperatorProcess| tail(&o.output(), 20)).unwrap_or_default();
        ensure!(
            out.status.success(),
            "block `{name}` of docs/getting-started.md failed:\n{script}--- stdout\n{}\n--- stderr\n{}\n--- operator\n{operator_log}",
            tail(&String::from_utf8_lossy(&out.stdout), 20),
            tail(&String::from_utf8_lossy(&out.stderr), 20),
        );
        eprintln!("    getting started: block `{name}` ran in {:.1}s", started.elapsed().as_secs_f64());
        ran.push(name);
    }
    for wanted in ["render", "install", "first-clinic", "gateway"] {
        ensure!(ran.iter().any(|n| n == wanted), "block `{wanted}` is no longer in docs/getting-started.md");
    }
    drop(operator);
    Ok(())
}

fn velero_installed_later_is_picked_up(_env: &Env) -> Result<()> {
    // A control plane of its own, without Velero, and an operator of its own.
    let plane = ControlPlane::start()?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    let kubeconfig = plane.operator_kubeconfig()?;
    let operator = OperatorProcess::start(&operator::binary()?, &kubeconfig, &plane.dir.join("logs"))?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: late\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: late\n  namespace: late\nspec: {}\n")?;
    plane
        .kubectl(&["-n", "late", "wait", "--for=condition=Ready", "clinicplatform/late", "--timeout=120s"])
        .with_context(|| tail(&operator.output(), 20))?;
    let cp: Value = serde_json::from_str(&plane.kubectl(&[
        "-n",
        "late",
        "get",
        "clinicplatform",
        "late",
        "-o",
        "json",
    ])?)?;
    let backup = cp["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "BackupReady")
        .cloned()
        .unwrap_or_default();
    ensure!(backup["reason"] == "VeleroNotInstalled" && backup["status"] == "False", "{backup}");
    // Without the Prometheus Operator: exporters run, monitors wait, and the condition says so.
    let monitoring = cp["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "MonitoringReady")
        .cloned()
        .unwrap_or_default();
    ensure!(monitoring["reason"] == "PrometheusOperatorNotInstalled", "{monitoring}");
    ensure!(!operator.output().contains("\"level\":\"ERROR\""), "errors logged without Velero");
    // Without Gateway API: a clinic asking for a route is built and says what is missing.
    plane.apply_yaml("apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: routed\n  namespace: late\nspec:\n  route: {host: emr.late.example.fr}\n")?;
    // Whether a condition of clinic `late/<name>` passes `test`.
    let condition = |name: &str, test: &dyn Fn(&Value) -> bool| -> Result<bool> {
        let cp: Value = serde_json::from_str(&plane.kubectl(&[
            "-n",
            "late",
            "get",
            "clinicplatform",
            name,
            "-o",
            "json",
        ])?)?;
        Ok(cp["status"]["conditions"].as_array().into_iter().flatten().any(test))
    };
    let route_condition = |reason: &str| -> Result<bool> {
        condition("routed", &|c| c["type"] == "RouteAccepted" && c["reason"] == reason)
    };
    eventually("RouteAccepted says Gateway API is missing", Duration::from_secs(60), || {
        route_condition("GatewayApiNotInstalled")
    })
    .with_context(|| tail(&operator.output(), 20))?;
    // Without Istio: a clinic asking for mutual TLS runs, and SecurityEnforced says what is
    // missing (the suite's policy offers a mesh).
    plane.apply_yaml("apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: meshed\n  namespace: late\nspec:\n  security: {mtls: true}\n  autoscaling: {verticalRecommendations: true}\n")?;
    let monitoring_says = |text: &str| -> Result<bool> {
        condition("meshed", &|c| {
            c["type"] == "MonitoringReady" && c["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    let security = |reason: &str| -> Result<bool> {
        condition("meshed", &|c| c["type"] == "SecurityEnforced" && c["reason"] == reason)
    };
    eventually("SecurityEnforced says Istio is missing", Duration::from_secs(90), || {
        security("MeshNotInstalled")
    })
    .with_context(|| tail(&operator.output(), 20))?;
    eventually(
        "MonitoringReady says the Vertical Pod Autoscaler and AlertmanagerConfig are missing",
        Duration::from_secs(30),
        || {
            Ok(monitoring_says("does not serve autoscaling.k8s.io/v1")?
                && monitoring_says("alert routing: not declared")?)
        },
    )
    .with_context(|| tail(&operator.output(), 20))?;
    plane
        .kubectl(&["-n", "late", "wait", "--for=condition=Ready", "clinicplatform/meshed", "--timeout=120s"])
        .with_context(|| tail(&operator.output(), 20))?;

    plane.install_crds(&cluster::upstream_crds()?)?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: velero\n")?;
    let started = Instant::now();
    eventually("Schedule created once Velero appears", Duration::from_secs(120), || {
        let stamp = format!("e2e/poke={}", started.elapsed().as_millis());
        let _ = plane.kubectl(&["-n", "late", "annotate", "clinicplatform", "late", &stamp, "--overwrite"]);
        std::thread::sleep(Duration::from_secs(2));
        Ok(plane
            .kubectl(&[
                "-n",
                "velero",
                "get",
                "schedules.velero.io",
                &clinic_operator::desired::backup::outside_name("late", "late"),
            ])
            .is_ok()
            && plane
                .kubectl(&["-n", "late", "get", "servicemonitors.monitoring.coreos.com", "late-metrics"])
                .is_ok())
    })
    .with_context(|| tail(&operator.output(), 20))?;
    eprintln!(
        "    Schedule and ServiceMonitor appeared {:.0}s after the CRDs",
        started.elapsed().as_secs_f64()
    );
    // The mesh policies are declared once Istio's API is served, at the clinic's next reconcile
    // (no restart; poked here rather than waiting for the periodic one), and the mesh is then
    // reported in force.
    eventually("mesh policies created once Istio appears", Duration::from_secs(120), || {
        let stamp = format!("e2e/poke={}", started.elapsed().as_millis());
        let _ = plane.kubectl(&["-n", "late", "annotate", "clinicplatform", "meshed", &stamp, "--overwrite"]);
        std::thread::sleep(Duration::from_secs(2));
        Ok(plane
            .kubectl(&["-n", "late", "get", "peerauthentications.security.istio.io", "meshed-backend"])
            .is_ok()
            && plane
                .kubectl(&["-n", "late", "get", "authorizationpolicies.security.istio.io", "meshed-backend"])
                .is_ok()
            && security("Enforced")?)
    })
    .with_context(|| tail(&operator.output(), 20))?;
    // The VerticalPodAutoscalers too, in the upstream schema, recommending only, and the
    // platform's alert routing.
    eventually("VerticalPodAutoscalers created once their CRDs appear", Duration::from_secs(120), || {
        Ok(monitoring_says("recommendations for the 4 workloads")?
            && monitoring_says("AlertmanagerConfig meshed-alert-routing sends critical alerts")?)
    })
    .with_context(|| tail(&operator.output(), 20))?;
    let vpa: Value = serde_json::from_str(&plane.kubectl(&[
        "-n",
        "late",
        "get",
        "verticalpodautoscalers.autoscaling.k8s.io",
        "meshed-backend",
        "-o",
        "json",
    ])?)?;
    ensure!(
        vpa["spec"]["updatePolicy"]["updateMode"] == "Off"
            && vpa["spec"]["targetRef"]["kind"] == "StatefulSet"
            && vpa["spec"]["targetRef"]["name"] == "meshed-backend",
        "{}",
        vpa["spec"]
    );
    // The route is declared once Gateway API is served (no restart), and waits for a Gateway.
    eventually("HTTPRoute created once Gateway API appears", Duration::from_secs(120), || {
        Ok(plane.kubectl(&["-n", "late", "get", "httproutes.gateway.networking.k8s.io", "routed"]).is_ok()
            && route_condition("AwaitingGateway")?)
    })
    .with_context(|| tail(&operator.output(), 20))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn setup() -> Result<Env> {
    if let Some(kubeconfig) = std::env::var_os("E2E_KUBECONFIG") {
        // The cluster, its CRDs and the operator (helm install) are the workflow's.
        let plane = ControlPlane::attach(PathBuf::from(kubeconfig))?;
        return Ok(Env { plane, node: None, operator: None, operator_kubeconfig: PathBuf::new() });
    }
    let plane = ControlPlane::start()?;
    plane.install_crds(&cluster::upstream_crds()?)?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: velero\n")?;
    // The chart's admission policies, as `helm install` puts them: every scenario runs with them
    // in force, so none of the operator's own writes may trip them.
    plane.apply_yaml(&chart_admission_policies()?)?;
    let operator_kubeconfig = plane.operator_kubeconfig()?;
    // The API server loads new policies asynchronously: wait until one of them refuses.
    let probe = plane.dir.join("admission-probe.yaml");
    std::fs::write(
        &probe,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe, namespace: default}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: probe, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: probe}}\n  template:\n    metadata: {labels: {app: probe}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    )?;
    eventually("the chart's admission policies in force", Duration::from_secs(30), || {
        let out = plane.kubectl_as(
            &operator_kubeconfig,
            &["create", "--dry-run=server", "-f", &probe.display().to_string()],
        );
        Ok(out.is_err_and(|e| format!("{e:#}").contains("system namespaces")))
    })?;
    let binary = operator::binary()?;
    let operator = OperatorProcess::start(&binary, &operator_kubeconfig, &plane.dir.join("logs"))?;
    let env = Env { plane, node: None, operator: Some(Mutex::new(operator)), operator_kubeconfig };
    eventually("operator /readyz", Duration::from_secs(60), || {
        Ok(env.operator().http_get("/readyz").is_ok_and(|(c, _)| c == 200))
    })?;
    Ok(env)
}

/// The chart's ValidatingAdmissionPolicies for the operator's ServiceAccount
/// (`clinic-system/clinic-operator`), rendered by helm.
fn chart_admission_policies() -> Result<String> {
    let tools = std::env::var("CLINIC_TOOLS_BIN").context("CLINIC_TOOLS_BIN (helm) is set by `make test`")?;
    let out = std::process::Command::new(format!("{tools}/helm"))
        .args(["template", "clinic-operator"])
        .arg(workspace_root().join("charts/clinic-operator"))
        .args(["--namespace", "clinic-system", "--kube-version", "1.34.0"])
        .args(["--show-only", "templates/admission-policy.yaml"])
        .output()?;
    ensure!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

fn main() -> ExitCode {
    type Scenario = fn(&Env) -> Result<()>;
    // The name is the function's: one spelling, no drift between the two.
    macro_rules! scenarios {
        ($($runs:ident $scenario:ident),* $(,)?) => {
            vec![$((stringify!($scenario), Runs::$runs, $scenario as Scenario)),*]
        };
    }
    let scenarios: Vec<(&str, Runs, Scenario)> = scenarios![
        Any crd_installs,
        Any minimal_example_converges,
        Any restricted_namespace_admits_every_pod,
        Any drift_is_put_back,
        Any invalid_specs_are_rejected,
        Any render_and_the_api_server_agree_on_every_mutation,
        Any spec_invalid_beyond_schema_degrades_without_writes,
        Any deletion_leaves_no_orphans,
        Local restart_mid_converge_keeps_secrets,
        Local a_restart_rereads_only_what_changed_while_down,
        Any converged_clinic_is_not_rewritten,
        Local rbac_is_least_privilege,
        Local operator_account_is_held_by_admission_policies,
        Any hostile_tenant_cannot_touch_another_clinic,
        Local operator_endpoints_and_no_secret_in_logs,
        Any backup_schedule_and_health,
        Any refused_pods_degrade_the_clinic,
        Any upgrade_waits_for_a_backup,
        Any restored_namespace_is_adopted,
        Local velero_installed_later_is_picked_up,
        Local getting_started_runs_as_written,
        Local kind_workflow_steps_pass_locally,
        Local oldest_supported_api_server_accepts_the_crd_and_children,
        Any namespace_pod_security_is_enforced_and_opt_out_is_visible,
        Local a_replicated_database_waits_for_the_mariadb_operator,
        Any tls_certificate_and_compliance_evidence,
        Any gateway_route_is_accepted_and_refusals_are_told,
        Any monitoring_is_accepted_by_the_real_schemas,
        Local every_example_is_applied_and_converges,
        Local namespaced_mode_runs_with_roles_only,
        Local leader_election_one_active_then_failover,
        Any missing_velero_namespace_does_not_break_the_platform,
        Local audit_log_records_who_changed_a_clinic_and_no_password,
    ];
    // E2E_SCENARIOS=a,b,c runs those scenarios only (the kind workflow's selection); a name
    // that is not a scenario is an error, so a renamed scenario cannot silently drop out.
    let selected: Option<Vec<String>> = std::env::var("E2E_SCENARIOS")
        .ok()
        .map(|names| names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect());
    for name in selected.iter().flatten() {
        if !scenarios.iter().any(|(scenario, _, _)| scenario == name) {
            eprintln!("E2E_SCENARIOS names `{name}`, which is not a scenario of e2e/tests/e2e.rs");
            return ExitCode::FAILURE;
        }
    }
    let args = Arguments::from_args();
    let started = Instant::now();
    let env = match setup() {
        Ok(env) => Arc::new(env),
        Err(e) => {
            eprintln!("e2e setup failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("e2e setup done in {:.1}s", started.elapsed().as_secs_f64());
    let attached = env.operator.is_none();
    let trials = scenarios
        .into_iter()
        .filter(|(_, runs, _)| !attached || *runs == Runs::Any)
        .filter(|(name, _, _)| selected.as_ref().is_none_or(|names| names.iter().any(|n| n == name)))
        .map(|(name, _, scenario)| trial(&env, name, scenario))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        let logs = env.plane.dir.join("logs");
        eprintln!("--- operator log (tail) ---\n{}", env.operator_log());
        eprintln!("(control-plane logs in {}; set E2E_KEEP_DIR=1 to keep them)", logs.display());
        eprintln!("{}", failure_summary());
    }
    eprintln!("e2e suite took {:.1}s", started.elapsed().as_secs_f64());
    drop(env);
    conclusion.exit_code()
}
