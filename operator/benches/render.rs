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

fn main() {
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
