//! Does a live object already carry everything we declare?
//!
//! The API server adds defaults and status, so a live object is "converged" when every field of
//! the desired object is present with the same value (a subset match). Lists must match element
//! by element and in length, so an added rule or container counts as drift. In security-relevant
//! subtrees (`securityContext`, a NetworkPolicy's `spec`) nothing may be present beyond what we
//! declare: an added `privileged: true`, capability or peer is drift even though our own fields
//! are intact.

use serde_json::Value;

/// Keys under which the live value must equal ours exactly (no extra fields).
const EXACT_KEYS: &[&str] = &["securityContext"];

/// Whether `live` carries every field of `desired` (see the module docs).
pub fn converged(desired: &Value, live: &Value) -> bool {
    first_difference(desired, live).is_none()
}

/// The path of the first field where `live` differs from `desired` (e.g.
/// `spec.template.spec.containers[0].securityContext`), or `None` when converged.
pub fn first_difference(desired: &Value, live: &Value) -> Option<String> {
    let exact_spec = desired.get("kind").and_then(Value::as_str) == Some("NetworkPolicy");
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(key, dv)| {
            let lv = l.get(key).unwrap_or(&Value::Null);
            let same = if exact_spec && key == "spec" { exact(dv, lv) } else { subset(key, dv, lv) };
            if same { None } else { Some(deepest(key.clone(), dv, lv)) }
        }),
        _ => Some(String::new()),
    }
}

/// Narrows a differing subtree down to its first differing leaf, for messages.
fn deepest(path: String, desired: &Value, live: &Value) -> String {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                let lv = l.get(k).unwrap_or(&Value::Null);
                if !subset(k, dv, lv) {
                    return deepest(format!("{path}.{k}"), dv, lv);
                }
            }
            path
        }
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                if !subset("", dv, lv) {
                    return deepest(format!("{path}[{i}]"), dv, lv);
                }
            }
            path
        }
        _ => path,
    }
}

/// Values the API server omits when it writes an object back (Go `omitempty`): absent and
/// these mean the same.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn subset(key: &str, desired: &Value, live: &Value) -> bool {
    if EXACT_KEYS.contains(&key) {
        return exact(desired, live);
    }
    if is_empty(desired) && live.is_null() {
        return true;
    }
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            d.iter().all(|(k, dv)| subset(k, dv, l.get(k).unwrap_or(&Value::Null)))
        }
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| subset("", dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        _ => desired == live,
    }
}

/// Equal after treating empty and absent alike, with no extra fields on the live side.
fn exact(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            let keys_ok = l.iter().all(|(k, lv)| is_empty(lv) || d.get(k).is_some_and(|dv| !is_empty(dv)));
            keys_ok && d.iter().all(|(k, dv)| exact(dv, l.get(k).unwrap_or(&Value::Null)))
        }
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| exact(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) if is_empty(d) && is_empty(l) => true,
        _ => desired == live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_status_are_ignored() {
        let desired = json!({"kind": "Service", "spec": {"ports": [{"port": 80}]}});
        let live = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}, "status": {}});
        assert!(converged(&desired, &live));
    }

    #[test]
    fn a_changed_value_is_drift() {
        let desired = json!({"kind": "Service", "spec": {"ports": [{"port": 80}]}});
        let live = json!({"kind": "Service", "spec": {"ports": [{"port": 81}]}});
        assert!(!converged(&desired, &live));
    }

    #[test]
    fn an_added_list_element_is_drift() {
        let desired = json!({"kind": "Service", "spec": {"ports": [{"port": 80}]}});
        let live = json!({"kind": "Service", "spec": {"ports": [{"port": 80}, {"port": 22}]}});
        assert!(!converged(&desired, &live));
    }

    #[test]
    fn empty_lists_equal_absent_ones() {
        let desired = json!({"kind": "NetworkPolicy", "spec": {"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]}});
        let live = json!({"kind": "NetworkPolicy", "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
        assert!(converged(&desired, &live));
    }

    #[test]
    fn an_added_field_in_a_network_policy_is_drift() {
        let desired = json!({"kind": "NetworkPolicy", "spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}]}});
        let live = json!({"kind": "NetworkPolicy", "spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "b"}}, "namespaceSelector": {"matchLabels": {"x": "y"}}}]}]}});
        assert!(!converged(&desired, &live));
    }

    #[test]
    fn an_added_field_in_a_security_context_is_drift() {
        let desired = json!({"kind": "Deployment", "spec": {"securityContext": {"runAsNonRoot": true}}});
        let weakened = json!({"kind": "Deployment", "spec": {"securityContext": {"runAsNonRoot": true, "capabilities": {"add": ["NET_ADMIN"]}}}});
        assert!(!converged(&desired, &weakened));
        let same = json!({"kind": "Deployment", "spec": {"securityContext": {"runAsNonRoot": true}}});
        assert!(converged(&desired, &same));
    }

    #[test]
    fn a_removed_label_is_drift_an_added_one_is_not() {
        let desired = json!({"kind": "Service", "metadata": {"labels": {"a": "1"}}});
        assert!(!converged(&desired, &json!({"kind": "Service", "metadata": {"labels": {}}})));
        assert!(converged(
            &desired,
            &json!({"kind": "Service", "metadata": {"labels": {"a": "1", "b": "2"}}})
        ));
    }

    #[test]
    fn omitted_zero_values_match_absent_ones() {
        let desired = json!({"kind": "Service", "spec": {"publishNotReadyAddresses": false, "env": [{"name": "A", "value": ""}]}});
        let live = json!({"kind": "Service", "spec": {"env": [{"name": "A"}]}});
        assert!(converged(&desired, &live));
        let flipped =
            json!({"kind": "Service", "spec": {"publishNotReadyAddresses": true, "env": [{"name": "A"}]}});
        assert!(!converged(&desired, &flipped));
    }

    #[test]
    fn numbers_compare_by_value() {
        let desired = json!({"kind": "X", "spec": {"n": 1}});
        assert!(converged(&desired, &json!({"kind": "X", "spec": {"n": 1.0}})));
    }
}
