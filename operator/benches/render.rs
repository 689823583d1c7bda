//! `cargo bench -p clinic-operator --bench render`: how long `render` takes for a fleet file.
//!
//! Not a test (nothing asserts a time): it prints figures for the docs. Each size is rendered
//! several times and the median is reported, with the number of objects produced.

use std::time::{Duration, Instant};

fn fleet(n: usize) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: clinic-{i:04}\n  namespace: clinic-{i:04}\nspec:\n  ingress:\n    host: clinic-{i:04}.example.fr\n    tls:\n      issuerRef:\n        name: letsencrypt\n"
        ));
    }
    yaml
}

/// Where the time of one render goes, for 1,000 clinics: parse, the structural schema, validate
/// (CEL and the checks beyond it), build, serialise.
fn breakdown() {
    use clinic_operator::api::{ClinicPlatform, schema};
    use clinic_operator::desired::{self, SecretValues};
    use clinic_operator::model;
    let input = fleet(1000);
    let t = Instant::now();
    let clinics: Vec<ClinicPlatform> = serde_yaml::Deserializer::from_str(&input)
        .map(|d| serde::Deserialize::deserialize(d).expect("parses"))
        .collect();
    let parse = t.elapsed();
    let documents: Vec<serde_json::Value> =
        clinics.iter().map(|c| serde_json::to_value(c).expect("JSON")).collect();
    let t = Instant::now();
    let refused = documents.iter().filter(|d| !schema::check(d).is_empty()).count();
    let structure = t.elapsed();
    assert_eq!(refused, 0, "the fleet is valid");
    let t = Instant::now();
    let models: Vec<_> = clinics.iter().map(|c| model::validate(c).expect("valid")).collect();
    let validate = t.elapsed();
    let t = Instant::now();
    let objects: Vec<_> =
        models.iter().flat_map(|m| desired::objects(m, &SecretValues::Placeholder)).collect();
    let build_time = t.elapsed();
    let t = Instant::now();
    let mut bytes = 0;
    for o in &objects {
        bytes += serde_yaml::to_string(o).expect("serialises").len();
    }
    let serialise = t.elapsed();
    println!(
        "1000 clinics: parse {:.0} ms, structural schema {:.0} ms, validate (CEL + checks) {:.0} ms, build {:.0} ms, YAML out {:.0} ms ({} KiB)",
        parse.as_secs_f64() * 1e3,
        structure.as_secs_f64() * 1e3,
        validate.as_secs_f64() * 1e3,
        build_time.as_secs_f64() * 1e3,
        serialise.as_secs_f64() * 1e3,
        bytes / 1024
    );
}

fn main() {
    // `cargo test --all-targets` builds and starts benches too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("render benchmark: run `cargo bench -p clinic-operator --bench render` to measure");
        return;
    }
    breakdown();
    for n in [1usize, 100, 1000] {
        let input = fleet(n);
        let mut times: Vec<Duration> = Vec::new();
        let mut objects = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let out = clinic_operator::render::render(&input, "default").expect("fleet renders");
            times.push(started.elapsed());
            objects = out.matches("\n---\n").count() + usize::from(out.starts_with("---\n"));
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "render {n:>5} clinics: {objects:>6} objects ({} per clinic), median {:>8.1} ms over 5 runs (min {:.1} ms), {} bytes of YAML in",
            objects / n,
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            input.len()
        );
    }
}
