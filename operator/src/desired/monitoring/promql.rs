//! The metrics a PromQL expression reads, so that a test can hold every alert and panel to
//! the metrics something really exposes.

/// Every metric the alerts and panels may use, with what exposes it. Only names here may
/// appear in an expression (a test checks); the operator's own are checked against its
/// registry separately.
pub const KNOWN_METRICS: &[(&str, &str)] = &[
    ("mysql_up", "mysqld-exporter"),
    ("mysql_global_status_threads_connected", "mysqld-exporter"),
    ("mysql_global_status_queries", "mysqld-exporter"),
    ("mysql_global_status_slow_queries", "mysqld-exporter"),
    ("mysql_global_variables_max_connections", "mysqld-exporter"),
    ("nginx_up", "nginx-prometheus-exporter"),
    ("nginx_http_requests_total", "nginx-prometheus-exporter"),
    ("nginx_connections_active", "nginx-prometheus-exporter"),
    ("nginx_connections_waiting", "nginx-prometheus-exporter"),
    ("kube_statefulset_status_replicas_ready", "kube-state-metrics"),
    ("kube_deployment_status_replicas_available", "kube-state-metrics"),
    ("kube_pod_container_status_ready", "kube-state-metrics"),
    ("kube_pod_container_status_restarts_total", "kube-state-metrics"),
    ("kube_pod_start_time", "kube-state-metrics"),
    ("kubelet_volume_stats_available_bytes", "kubelet"),
    ("kubelet_volume_stats_capacity_bytes", "kubelet"),
    ("kubelet_volume_stats_used_bytes", "kubelet"),
    ("prober_probe_total", "kubelet (/metrics/probes)"),
    ("container_cpu_usage_seconds_total", "kubelet cAdvisor"),
    ("container_memory_working_set_bytes", "kubelet cAdvisor"),
    ("velero_backup_last_successful_timestamp", "Velero"),
    ("nginx_ingress_controller_requests", "ingress-nginx controller"),
    ("nginx_ingress_controller_request_duration_seconds_bucket", "ingress-nginx controller"),
    ("traefik_service_requests_total", "Traefik (Gateway API)"),
    ("traefik_service_request_duration_seconds_bucket", "Traefik (Gateway API)"),
    ("certmanager_certificate_expiration_timestamp_seconds", "cert-manager"),
];

/// Metric names used by a PromQL expression: identifiers outside label matchers, strings and
/// ranges that are neither functions, keywords nor numbers.
pub fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    let mut names = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth_brace, mut depth_bracket) = (0, 0, 0);
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            '(' => {}
            ')' => after_grouping = false,
            _ if (c.is_ascii_alphabetic() || c == '_' || c == ':')
                && depth_brace == 0
                && depth_bracket == 0 =>
            {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '_' || chars[i + 1] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                let is_function = next == Some(&'(');
                let grouping = matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                if grouping {
                    // `group_left` may stand alone; only a parenthesised label list follows.
                    after_grouping = next == Some(&'(');
                } else if !is_function && !KEYWORDS.contains(&word.as_str()) && !after_grouping {
                    names.push(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}
