//! Logs and traces (issue 19): the LogQL of the dashboard's log panels and of the Loki alert
//! rules, the rule-group ConfigMap the Loki ruler's sidecar loads, and the OpenTelemetry agent
//! the backend runs when the platform names a collector. Loki and the OpenTelemetry Operator
//! cannot be had here (AGPL; the module proxy refuses the operator's module): the rule file's
//! structure is checked by promtool (the same rule-group format), each line filter against real
//! log lines of what it detects, and the agent's wiring on the built objects. The real-pods tier
//! runs the filters against the pods' own output and follows a trace through the gateway.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use clinic_operator::desired::{self, SecretValues, backend, monitoring};
use clinic_operator::model::Clinic;
use clinic_operator::policy::{Policy, PolicyError};
use common::{clinic, tempdir, text, tool, typed};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use regex::Regex;
use serde_json::Value;

const TRACING_BY_IMAGE: &str = "tracing:
  collector:
    namespace: observability
    service: otel-collector
    podLabels: {app.kubernetes.io/name: opentelemetry-collector}
  javaAgent:
    image: ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.10.0
";

const TRACING_BY_OPERATOR: &str = "tracing:
  collector: {namespace: observability, service: otel-collector, port: 4317, protocol: grpc}
  javaAgent: {instrumentation: observability/java}
";

/// Every LogQL expression the clinic ships: (where, expression).
fn expressions(c: &Clinic) -> Vec<(String, String)> {
    let panels = monitoring::log_panels(c)
        .into_iter()
        .flat_map(|p| p.queries.into_iter().map(move |(_, q)| (format!("panel {}", p.title), q)));
    let alerts = monitoring::log_alerts(c).into_iter().map(|a| (format!("alert {}", a.name), a.expr));
    panels.chain(alerts).collect()
}

/// A LogQL line filter: `|=` or `|~`, and its backquoted pattern.
type LineFilter = (String, String);

/// The line filters of a LogQL expression.
fn line_filters(expr: &str) -> Vec<LineFilter> {
    Regex::new(r"(\|[=~]) `([^`]*)`")
        .unwrap()
        .captures_iter(expr)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect()
}

fn matches(filter: &LineFilter, line: &str) -> bool {
    match filter.0.as_str() {
        "|=" => line.contains(&filter.1),
        _ => Regex::new(&filter.1).unwrap().is_match(line),
    }
}

#[test]
fn every_log_query_selects_only_the_clinics_streams() {
    let lyon = clinic("  {}\n");
    let exprs = expressions(&lyon);
    assert_eq!(exprs.len(), 6, "three panels and three alerts: {exprs:?}");
    let selector = Regex::new(r"\{([^}]*)\}").unwrap();
    for (what, expr) in &exprs {
        // One stream selector, in braces, that names the clinic's namespace and instance label
        // first: no query reads another clinic's logs.
        let selectors: Vec<&str> = selector.captures_iter(expr).map(|c| c.get(1).unwrap().as_str()).collect();
        let streams: Vec<&&str> = selectors.iter().filter(|s| s.contains('=')).collect();
        assert_eq!(streams.len(), 1, "{what}: {expr}");
        assert!(streams[0].starts_with(r#"namespace="clinic-lyon", clinic="lyon""#), "{what}: {expr}");
        assert!(!line_filters(expr).is_empty(), "{what} has no line filter: {expr}");
        for (op, pattern) in line_filters(expr) {
            // LogQL's regexes are RE2: the regex crate has the same syntax (no look-around).
            if op == "|~" {
                Regex::new(&pattern).unwrap_or_else(|e| panic!("{what}: {pattern}: {e}"));
            }
        }
    }
    // Another clinic's queries name only it.
    let other = common::annotated_clinic("{}", "  {}\n");
    let mut other = other;
    other.namespace = "clinic-nantes".into();
    other.name = "nantes".into();
    for (what, expr) in expressions(&other) {
        assert!(expr.contains(r#"namespace="clinic-nantes", clinic="nantes""#), "{what}: {expr}");
        assert!(!expr.contains("lyon"), "{what}: {expr}");
    }
}

/// Real log lines, and the filter that must (or must not) see each.
#[test]
fn line_filters_match_what_they_detect_and_not_a_healthy_log() {
    let c = clinic("  {}\n");
    let alert = |name: &str| {
        let a = monitoring::log_alerts(&c).into_iter().find(|a| a.name == name).unwrap();
        line_filters(&a.expr)
    };
    let panel = |title: &str| {
        let p = monitoring::log_panels(&c).into_iter().find(|p| p.title == title).unwrap();
        line_filters(&p.queries[0].1)
    };
    let healthy = [
        // MariaDB 10.11 at start and at work.
        "2026-12-04 10:00:00 0 [Note] Starting MariaDB 10.11.14-MariaDB-0+deb12u2 source revision as process 1",
        "2026-12-04 10:00:01 0 [Note] mariadbd: ready for connections.",
        // The gateway's access log, in the format of its nginx.conf.
        r#"10.244.0.7 - - [04/Dec/2026:10:00:02 +0000] "GET /openmrs/ws/rest/v1/session HTTP/1.1" 200 97 "-" "curl/8.14.1" rt=0.004 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"#,
        // OpenMRS at work.
        "INFO - LoggingAdvice.invoke(115) |2026-12-04T10:00:03,000| In method PatientService.getPatientByUuid",
    ];
    let cases: Vec<(&str, Vec<LineFilter>, Vec<&str>)> = vec![
        (
            "ClinicRepeatedLoginFailures",
            alert("ClinicRepeatedLoginFailures"),
            // openmrs-core's ContextDAO, for a refused REST or web login.
            vec![
                "INFO - HibernateContextDAO.authenticate(153) |2026-12-04T10:00:04,000| Failed login attempt (login=admin) - Invalid username and/or password: admin",
            ],
        ),
        (
            "ClinicDatabaseErrors",
            alert("ClinicDatabaseErrors"),
            vec![
                "2026-12-04 10:00:05 0 [ERROR] InnoDB: Unable to lock ./ibdata1 error: 11",
                "com.mysql.cj.jdbc.exceptions.CommunicationsException: Communications link failure",
                "Caused by: java.sql.SQLNonTransientConnectionException: Too many connections",
                "Deadlock found when trying to get lock; try restarting transaction",
                "Lock wait timeout exceeded; try restarting transaction",
                "2026-12-04 10:00:06 8 [Warning] Access denied for user 'openmrs'@'10.244.0.9' (using password: YES)",
            ],
        ),
        (
            "ClinicBackendOutOfMemory",
            alert("ClinicBackendOutOfMemory"),
            vec![r#"Exception in thread "http-nio-8080-exec-5" java.lang.OutOfMemoryError: Java heap space"#],
        ),
        (
            "Log errors by component",
            panel("Log errors by component"),
            vec![
                "ERROR - ModuleFactory.startModule(789) |2026-12-04T10:00:07,000| Error while starting module",
                "2026/12/04 10:00:08 [crit] 1#1: *3 connect() to unix:/run/x failed",
                "org.hibernate.exception.JDBCConnectionException: could not prepare statement",
            ],
        ),
        (
            "Backend start",
            panel("Backend start"),
            vec![
                "Initiating OpenMRS startup",
                "Waiting for database to initialize...",
                "04-Dec-2026 10:10:00.000 INFO [main] org.apache.catalina.startup.Catalina.start Server startup in [512034] milliseconds",
            ],
        ),
    ];
    for (what, filters, lines) in cases {
        assert!(!filters.is_empty(), "{what}");
        for line in lines {
            assert!(filters.iter().all(|f| matches(f, line)), "{what} misses: {line}");
        }
        if what != "Backend start" {
            for line in healthy {
                assert!(!filters.iter().all(|f| matches(f, line)), "{what} fires on a healthy line: {line}");
            }
        }
    }
}

#[test]
fn loki_rules_ship_only_when_asked_in_the_rule_group_format() {
    assert!(monitoring::loki_rules(&clinic("  {}\n")).is_none(), "off by default");
    assert!(
        monitoring::loki_rules(&clinic("  monitoring:\n    enabled: false\n    logs: {alertRules: true}\n"))
            .is_none(),
        "not without monitoring"
    );
    let c = clinic("  monitoring:\n    logs: {alertRules: true}\n");
    let rules = monitoring::loki_rules(&c).unwrap();
    assert_eq!(rules.metadata.name.as_deref(), Some("lyon-loki-rules"));
    assert_eq!(rules.metadata.namespace.as_deref(), Some("clinic-lyon"));
    assert!(rules.metadata.owner_references.is_some(), "pruned with the clinic");
    assert_eq!(rules.metadata.labels.as_ref().unwrap()["loki_rule"], "");
    // And it is a child like the others: applied, pruned when switched off.
    let objects = desired::objects(&c, &SecretValues::Placeholder);
    let _: ConfigMap = typed(&objects, "ConfigMap", "lyon-loki-rules");
    let off = desired::objects(&clinic("  {}\n"), &SecretValues::Placeholder);
    assert!(off.iter().all(|o| o.metadata.name.as_deref() != Some("lyon-loki-rules")));

    let data = rules.data.unwrap();
    let (key, file) = data.iter().next().unwrap();
    assert_eq!(data.len(), 1);
    assert!(key.starts_with("clinic-") && key.ends_with("-logs.yaml") && key.contains("lyon"), "{key}");
    let groups: Value = serde_yaml::from_str(file).unwrap();
    assert_eq!(groups, monitoring::loki_rule_groups(&c));
    let rules = groups["groups"][0]["rules"].as_array().unwrap();
    let names: BTreeSet<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    let expected: BTreeSet<&str> = monitoring::log_alerts(&c).iter().map(|a| a.name).collect();
    assert_eq!(names, expected);
    for rule in rules {
        assert_eq!(rule["labels"]["namespace"], "clinic-lyon");
        assert_eq!(rule["labels"]["clinic"], "lyon");
        assert!(rule["annotations"]["runbook_url"].as_str().unwrap().contains("#clinic"));
    }

    // The structure is Prometheus' rule-group format, which the Loki ruler reads: promtool
    // checks it with each LogQL expression swapped for PromQL (it parses expressions as PromQL).
    let mut checked = groups.clone();
    for rule in checked["groups"][0]["rules"].as_array_mut().unwrap() {
        rule["expr"] = Value::String("vector(1) > 0".into());
    }
    let dir = tempdir("loki-rules");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&checked).unwrap()).unwrap();
    let out = Command::new(tool("promtool")).args(["check", "rules"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "promtool check rules:\n{}", text(&out));
    // promtool does refuse a broken group (the check can fail).
    let mut broken = checked.clone();
    broken["groups"][0]["rules"][0]["severity"] = Value::String("warning".into());
    std::fs::write(&path, serde_yaml::to_string(&broken).unwrap()).unwrap();
    let out = Command::new(tool("promtool")).args(["check", "rules"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "promtool accepted an unknown rule field");

    // The ruler's sidecar label is the platform's to choose.
    let custom = clinic(
        "  monitoring:\n    logs: {alertRules: true, ruleLabel: loki.grafana.com/rules, ruleLabelValue: clinics}\n",
    );
    let labels = monitoring::loki_rules(&custom).unwrap().metadata.labels.unwrap();
    assert_eq!(labels["loki.grafana.com/rules"], "clinics");
    assert!(!labels.contains_key("loki_rule"));
}

#[test]
fn the_dashboard_log_panels_can_be_switched_off() {
    let c = clinic("  monitoring:\n    logs: {dashboard: false}\n");
    assert!(monitoring::log_panels(&c).is_empty());
    let json: Value =
        serde_json::from_str(monitoring::dashboard(&c).unwrap().data.unwrap().values().next().unwrap())
            .unwrap();
    assert_eq!(json["panels"].as_array().unwrap().len(), monitoring::panels(&c).len());
    assert_eq!(
        json["templating"]["list"].as_array().unwrap().len(),
        1,
        "no Loki variable without log panels"
    );
}

fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml, "test").unwrap_or_else(|e| panic!("{e}"))
}

fn traced(policy_yaml: &str) -> Clinic {
    policy(policy_yaml).admit(clinic("  tracing: {enabled: true}\n")).unwrap_or_else(|e| panic!("{e}"))
}

fn backend_parts(c: &Clinic) -> (StatefulSet, Container, BTreeMap<String, EnvVar>) {
    let set = backend::stateful_set(c, None);
    let pod = set.spec.clone().unwrap().template.spec.unwrap();
    let main = pod.containers.into_iter().find(|c| c.name == "openmrs").unwrap();
    let env = main.env.clone().unwrap_or_default().into_iter().map(|e| (e.name.clone(), e)).collect();
    (set, main, env)
}

fn value<'a>(env: &'a BTreeMap<String, EnvVar>, name: &str) -> &'a str {
    env.get(name).and_then(|e| e.value.as_deref()).unwrap_or_else(|| panic!("{name} not set"))
}

#[test]
fn tracing_is_the_platforms_decision() {
    // Without a collector in the policy, a clinic asking for traces is refused, naming the field.
    let refused = Policy::default().admit(clinic("  tracing: {enabled: true}\n")).unwrap_err();
    assert_eq!(refused.field, "spec.tracing.enabled");
    assert!(refused.to_string().contains("no trace collector"), "{refused}");
    // A clinic that does not ask gets none, whatever the policy offers.
    let quiet = policy(TRACING_BY_IMAGE).admit(clinic("  {}\n")).unwrap();
    assert!(quiet.tracing.is_none());
    let (_, main, env) = backend_parts(&quiet);
    assert!(env.keys().all(|k| !k.starts_with("OTEL_") && k != "JAVA_TOOL_OPTIONS"), "{env:?}");
    assert!(main.volume_mounts.unwrap().iter().all(|m| m.name != "otel-agent"));
    // The agent comes one way: exactly one of instrumentation or image.
    for bad in [
        "tracing:\n  collector: {namespace: o, service: c}\n  javaAgent: {}\n",
        "tracing:\n  collector: {namespace: o, service: c}\n  javaAgent: {instrumentation: o/java, image: agent:1}\n",
        "tracing:\n  collector: {namespace: o, service: c}\n  javaAgent: {instrumentation: java}\n",
        "tracing:\n  collector: {namespace: o, service: c}\n  javaAgent: {instrumentation: o/java, path: /x.jar}\n",
    ] {
        assert!(matches!(Policy::from_yaml(bad, "test"), Err(PolicyError::JavaAgent { .. })), "{bad}");
    }
    assert!(
        Policy::from_yaml("tracing:\n  collector: {namespace: o}\n  javaAgent: {image: a}\n", "test")
            .is_err()
    );
    assert!(
        Policy::from_yaml(
            "tracing:\n  collector: {namespace: o, service: c, protocol: zipkin}\n  javaAgent: {image: a}\n",
            "test"
        )
        .is_err()
    );
}

#[test]
fn an_agent_image_is_copied_in_by_an_init_container() {
    let c = traced(TRACING_BY_IMAGE);
    let (set, main, env) = backend_parts(&c);
    let pod = set.spec.unwrap().template.spec.unwrap();
    let init = pod.init_containers.unwrap();
    let copier = init.iter().find(|c| c.name == "otel-agent").expect("the agent's init container");
    assert_eq!(
        copier.image.as_deref(),
        Some("ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.10.0")
    );
    assert_eq!(
        copier.command.clone().unwrap(),
        ["cp", "/javaagent.jar", &format!("{}/javaagent.jar", backend::OTEL_AGENT_DIR)]
    );
    let sc = copier.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(copier.resources.as_ref().unwrap().limits.is_some());
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "otel-agent").unwrap();
    assert!(volume.empty_dir.unwrap().size_limit.is_some(), "a bounded emptyDir");
    let mounts = |c: &Container| c.volume_mounts.clone().unwrap_or_default();
    assert!(mounts(copier).iter().any(|m| m.name == "otel-agent" && m.mount_path == backend::OTEL_AGENT_DIR));
    assert!(mounts(&main).iter().any(|m| m.name == "otel-agent" && m.mount_path == backend::OTEL_AGENT_DIR));

    assert_eq!(
        value(&env, "JAVA_TOOL_OPTIONS"),
        format!("-javaagent:{}/javaagent.jar", backend::OTEL_AGENT_DIR)
    );
    assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"), "http://otel-collector.observability.svc:4318");
    assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf");
    assert_eq!(value(&env, "OTEL_TRACES_EXPORTER"), "otlp");
    assert_eq!(value(&env, "OTEL_LOGS_EXPORTER"), "none", "logs go to stdout, not to the collector");
    assert_eq!(value(&env, "OTEL_SERVICE_NAME"), "openmrs");
    let resource = value(&env, "OTEL_RESOURCE_ATTRIBUTES");
    assert!(
        resource.contains("clinic=lyon") && resource.contains("k8s.namespace.name=clinic-lyon"),
        "{resource}"
    );
    // `$(OTEL_POD_NAME)` is expanded by the kubelet only from a variable defined before it.
    let names: Vec<String> = main.env.unwrap().into_iter().map(|e| e.name).collect();
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(resource.contains("k8s.pod.name=$(OTEL_POD_NAME)"));
    assert!(pos("OTEL_POD_NAME") < pos("OTEL_RESOURCE_ATTRIBUTES"));
    assert!(
        !set.metadata.annotations.unwrap_or_default().contains_key(backend::OTEL_INJECT_JAVA_ANNOTATION),
        "no injection asked of an absent operator"
    );
}

#[test]
fn the_opentelemetry_operator_injects_the_agent_when_the_platform_runs_it() {
    let c = traced(TRACING_BY_OPERATOR);
    let (set, main, env) = backend_parts(&c);
    let template = set.spec.unwrap().template;
    let annotations = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations[backend::OTEL_INJECT_JAVA_ANNOTATION], "observability/java");
    assert_eq!(annotations[backend::OTEL_CONTAINER_NAMES_ANNOTATION], "openmrs");
    let pod = template.spec.unwrap();
    assert!(pod.init_containers.unwrap().iter().all(|c| c.name != "otel-agent"));
    assert!(!env.contains_key("JAVA_TOOL_OPTIONS"), "the OpenTelemetry Operator sets it");
    assert!(main.volume_mounts.unwrap().iter().all(|m| m.name != "otel-agent"));
    // The variables the operator would set are ours, so the export goes where the policy opens.
    assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"), "http://otel-collector.observability.svc:4317");
    assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc");
}

#[test]
fn the_backend_may_reach_the_collector_and_nothing_else_new() {
    let egress = |c: &Clinic| {
        let objects = desired::objects(c, &SecretValues::Placeholder);
        let policy: NetworkPolicy = typed(&objects, "NetworkPolicy", "lyon-backend");
        serde_json::to_value(policy.spec.unwrap().egress.unwrap_or_default()).unwrap()
    };
    let plain = egress(&clinic("  {}\n"));
    let traced_by_image = egress(&traced(TRACING_BY_IMAGE));
    let plain_rules = plain.as_array().unwrap();
    let rules = traced_by_image.as_array().unwrap();
    assert_eq!(rules.len(), plain_rules.len() + 1, "one more rule: {traced_by_image}");
    let added: Vec<&Value> = rules.iter().filter(|r| !plain_rules.contains(r)).collect();
    assert_eq!(added.len(), 1);
    let rule = added[0];
    assert_eq!(rule["ports"], serde_json::json!([{"port": 4318, "protocol": "TCP"}]));
    let peer = &rule["to"][0];
    assert_eq!(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "observability");
    assert_eq!(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "opentelemetry-collector");
    assert_eq!(rule["to"].as_array().unwrap().len(), 1);
    // Without pod labels in the policy: every pod of the collector's namespace, on its port only.
    let by_operator = egress(&traced(TRACING_BY_OPERATOR));
    let rule = by_operator.as_array().unwrap().iter().find(|r| !plain_rules.contains(r)).unwrap().clone();
    assert_eq!(rule["ports"], serde_json::json!([{"port": 4317, "protocol": "TCP"}]));
    assert!(rule["to"][0]["podSelector"].is_null());
}

#[test]
fn the_gateway_logs_and_forwards_the_trace_id() {
    let conf = desired::gateway::nginx_conf(&clinic("  {}\n"));
    assert!(conf.contains("access_log /dev/stdout clinic;"), "{conf}");
    assert!(conf.contains("trace_id=$trace_id"));
    assert!(conf.contains("proxy_set_header traceparent $traceparent;"));
    // Set once at the server level: no location overrides the proxy headers (nginx would drop
    // every inherited proxy_set_header of a location that sets its own).
    assert_eq!(conf.matches("proxy_set_header").count(), 5, "{conf}");
}

#[test]
fn monitoring_ready_says_what_logs_and_traces_get() {
    assert_eq!(
        monitoring::logs_and_traces(&clinic("  {}\n")),
        "logs: log panels on the dashboard; traces: off"
    );
    let everything = policy(TRACING_BY_IMAGE)
        .admit(clinic("  monitoring:\n    logs: {alertRules: true}\n  tracing: {enabled: true}\n"))
        .unwrap();
    assert_eq!(
        monitoring::logs_and_traces(&everything),
        "logs: log panels on the dashboard, Loki alert rules in ConfigMap lyon-loki-rules (label loki_rule=\"\"); traces: to http://otel-collector.observability.svc:4318 (Java agent copied from ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.10.0)"
    );
    let none = clinic("  monitoring:\n    enabled: false\n");
    assert_eq!(monitoring::logs_and_traces(&none), "logs: none shipped; traces: off");
}

/// docs/monitoring.md shows every query the dashboard and the log alerts use, as built for
/// `lyon` in `clinic-lyon`.
#[test]
fn docs_show_the_queries_the_clinic_ships() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/monitoring.md")).unwrap();
    for (what, expr) in expressions(&clinic("  {}\n")) {
        assert!(
            page.contains(&format!("```logql\n{expr}\n```")),
            "docs/monitoring.md lacks the {what} query:\n{expr}"
        );
    }
}
