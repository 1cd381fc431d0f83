//! The paper's shapes, from the presets as a user runs them.

use probescope::presets::{self, bifurcation::half_error_bound};
use probescope::report::Collect;
use probescope::runlog::{Record, Summary};

fn run(preset: &str, sets: &[&str]) -> Vec<Record> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let mut sink = Collect::default();
    presets::run_preset(preset, &sets, 1, &mut sink).unwrap();
    sink.records
}

fn summaries(records: &[Record]) -> Vec<&Summary> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Summary(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn untrained_mlp_error_is_near_zero_at_the_input_and_climbs_with_depth() {
    let records = run("untrained-mlp", &["datasets=2", "train=5000", "test=2000"]);
    let s = summaries(&records)[0];
    assert_eq!(s.probes.len(), 33);
    assert_eq!(s.datasets, 2);
    let e: Vec<f64> = s.probes.iter().map(|p| p.train_error.mean).collect();
    assert!(e[0] < 0.03, "input error {}", e[0]);
    assert!(e[32] > 0.3, "last layer error {}", e[32]);
    // Rising with depth: every block of eight layers is worse than the one before it.
    let block = |a: usize| e[a..a + 8].iter().sum::<f64>() / 8.0;
    assert!(
        block(1) < block(9) && block(9) < block(17) && block(17) < block(25),
        "{e:?}"
    );
    // The activations shrink with depth but stay far from underflow.
    let norms: Vec<f64> = s.probes.iter().map(|p| p.mean_norm.unwrap().mean).collect();
    assert!(norms[32] < norms[1] && norms[32] > 1e-6);
}

#[test]
fn bifurcation_concatenation_beats_both_branches_and_no_branch_beats_its_bound() {
    let records = run("bifurcation", &["steps=800", "train=3000", "test=3000"]);
    let sums = summaries(&records);
    assert_eq!(sums.len(), 2);
    for s in sums {
        let err = |name: &str| {
            s.probes
                .iter()
                .find(|p| p.probe == name)
                .unwrap()
                .test_error
                .unwrap()
                .mean
        };
        let (upper, lower, concat) = (err("upper3"), err("lower1"), err("concat"));
        assert!(
            concat < upper && concat < lower,
            "{}: {upper} {lower} {concat}",
            s.label
        );
        // No classifier of one half can beat atan(ratio)/pi; 3,000 test samples put the
        // measured error within about 0.02 of its expectation.
        assert!(upper > half_error_bound(0.6) - 0.02, "upper {upper}");
        assert!(lower > half_error_bound(1.0 / 0.6) - 0.02, "lower {lower}");
    }
    let trained = summaries(&records)[1];
    let concat = trained.probes.iter().find(|p| p.probe == "concat").unwrap();
    assert!(
        concat.test_error.unwrap().mean < 0.1,
        "the trained concatenation should be nearly exact"
    );
}

#[test]
fn feature_subset_error_falls_as_the_subset_grows() {
    let records = run(
        "feature-subset",
        &[
            "dim=200",
            "classes=5",
            "subsets=5,50,200",
            "train=3000",
            "test=2000",
        ],
    );
    let s = summaries(&records)[0];
    let test: Vec<f64> = s
        .probes
        .iter()
        .map(|p| p.test_error.unwrap().mean)
        .collect();
    assert!(test[0] > test[1] && test[1] > test[2], "{test:?}");
    // The subsets are recorded in the snapshot's probe names.
    assert_eq!(s.probes[1].probe, "input[50]");
    assert_eq!(s.probes[1].features, 50);
}
