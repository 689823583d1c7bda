//! The RBAC files stay consistent: every namespaced rule is granted in cluster mode too, Velero's
//! rights are never cluster-wide by default, and no file grants what the operator must never do.

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
    let extra: Vec<_> = rules("role-namespaced.yaml").difference(&cluster).cloned().collect();
    assert!(extra.is_empty(), "role-namespaced.yaml grants what the ClusterRole does not: {extra:?}");
}

#[test]
fn velero_rights_are_only_in_the_velero_role() {
    let velero =
        |file: &str| -> Vec<_> { rules(file).into_iter().filter(|(g, _, _)| g == "velero.io").collect() };
    for file in ["clusterrole.yaml", "role-namespaced.yaml", "role-leader-election.yaml"] {
        assert!(velero(file).is_empty(), "{file} grants Velero rights: {:?}", velero(file));
    }
    let granted = rules("role-velero.yaml");
    assert!(granted.iter().all(|(g, _, _)| g == "velero.io"), "role-velero.yaml grants more than Velero");
    // Backups are never deleted by the operator: a deleted clinic's backups expire (patch).
    assert!(!granted.iter().any(|(_, r, v)| v == "delete" && r == "backups"));
    assert!(!granted.iter().any(|(_, r, _)| r == "deletebackuprequests"));
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

/// What the operator watches it may list and watch, else its cache never gets in step and every
/// check reads those objects again (correct, but not what the caches are for).
#[test]
fn every_watched_kind_may_be_listed_and_watched() {
    use clinic_operator::reconcile::caches::{child_kinds, watched_optional_kinds};
    let cluster = rules("clusterrole.yaml");
    let namespaced = rules("role-namespaced.yaml");
    let velero = rules("role-velero.yaml");
    let may = |granted: &BTreeSet<(String, String, String)>, group: &str, plural: &str| {
        ["list", "watch"]
            .iter()
            .all(|verb| granted.contains(&(group.into(), plural.into(), verb.to_string())))
    };
    for ar in child_kinds().into_iter().chain(watched_optional_kinds()) {
        assert!(may(&cluster, &ar.group, &ar.plural), "clusterrole.yaml: list/watch {}", ar.plural);
        assert!(may(&namespaced, &ar.group, &ar.plural), "role-namespaced.yaml: list/watch {}", ar.plural);
    }
    for plural in ["schedules", "backups"] {
        assert!(may(&velero, "velero.io", plural), "role-velero.yaml: list/watch {plural}");
    }
}
