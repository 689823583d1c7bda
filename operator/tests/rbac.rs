//! The RBAC files stay consistent: every namespaced rule is granted in cluster mode too, and no
//! file grants what the operator must never do.

use std::collections::BTreeSet;

fn rules(file: &str) -> BTreeSet<(String, String, String)> {
    let path = format!("{}/../charts/clinic-operator/files/{file}", env!("CARGO_MANIFEST_DIR"));
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for rule in doc["rules"].as_sequence().unwrap() {
        for group in rule["apiGroups"].as_sequence().unwrap() {
            for resource in rule["resources"].as_sequence().unwrap() {
                for verb in rule["verbs"].as_sequence().unwrap() {
                    out.insert((
                        group.as_str().unwrap().to_string(),
                        resource.as_str().unwrap().to_string(),
                        verb.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn namespaced_roles_are_a_subset_of_the_cluster_role() {
    let cluster = rules("clusterrole.yaml");
    for file in ["role-namespaced.yaml", "role-velero.yaml"] {
        let extra: Vec<_> = rules(file).difference(&cluster).cloned().collect();
        assert!(extra.is_empty(), "{file} grants what the ClusterRole does not: {extra:?}");
    }
}

#[test]
fn no_file_grants_dangerous_verbs() {
    for file in ["clusterrole.yaml", "role-namespaced.yaml", "role-velero.yaml", "role-leader-election.yaml"]
    {
        for (group, resource, verb) in rules(file) {
            assert!(
                group != "*" && resource != "*" && verb != "*",
                "{file}: wildcard in {group}/{resource}/{verb}"
            );
            assert!(!["escalate", "bind", "impersonate"].contains(&verb.as_str()), "{file}: {verb}");
            assert!(
                !(resource == "secrets" && (verb == "delete" || verb == "update")),
                "{file}: {verb} secrets"
            );
            assert!(!resource.starts_with("pods"), "{file}: {resource}");
        }
    }
}
